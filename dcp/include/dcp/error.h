// The one error model of dcp++.
//
// Every failure is thrown as a dcp::Error (or a subclass). Each carries a
// code, says whether retrying the same call can help, and its message names
// what failed: the path, the key, the rank, the errno text. No message
// carries a C++ backtrace.
//
// retryable() is decided once, here, per code:
//   kTimeout                 yes: a slow peer or storage may answer next time
//   kStorage                 by errno: yes for EINTR, EAGAIN, EBUSY, EIO,
//                            ETIMEDOUT, ENOSPC and EDQUOT (space can come
//                            back), no for the rest (EACCES, EROFS, ENOTDIR...)
//   kCheckpoint              yes when every rank's failure is retryable
//   every other code         no: the input, the data or the group is wrong
//                            (kPeerLost: a rank is gone; the group must be
//                            rebuilt before anything collective can work)
//
// Protocol entry points (save, load, ...) throw CheckpointError, which
// carries the failures of every rank that failed; the lower layers throw the
// specific subclasses below, which CheckpointError wraps.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "dcp/export.h"

namespace dcp {

enum class ErrorCode {
  kInternal,         // a bug in dcp++ or a broken invariant
  kInvalidArgument,  // the caller passed something unusable (bad dtype, bad option)
  kNotFound,         // a path, checkpoint or key that does not exist
  kAlreadyExists,    // refusing to overwrite a committed checkpoint
  kStorage,          // an I/O error from the storage (errno)
  kCorruption,       // bytes on storage are not what was written (checksum, truncation, format)
  kPlanMismatch,     // the state dict and the checkpoint disagree (keys, shapes, dtypes)
  kConfig,           // a configuration value is wrong
  kTimeout,          // a peer or a collective did not answer in time
  kPeerLost,         // a peer rank's connection closed: it exited or crashed
  kCheckpoint,       // a protocol step failed on one or more ranks (CheckpointError)
};

DCP_CORE_EXPORT const char* error_code_name(ErrorCode code);

class DCP_CORE_EXPORT Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, bool retryable = false)
      : std::runtime_error(message), code_(code), retryable_(retryable) {}

  ErrorCode code() const noexcept { return code_; }
  // True when repeating the same call may succeed (a transient I/O error, a
  // timeout); false when the input itself is wrong.
  bool retryable() const noexcept { return retryable_; }

 private:
  ErrorCode code_;
  bool retryable_;
};

class DCP_CORE_EXPORT InvalidArgumentError : public Error {
 public:
  explicit InvalidArgumentError(const std::string& m) : Error(ErrorCode::kInvalidArgument, m) {}
};
class DCP_CORE_EXPORT NotFoundError : public Error {
 public:
  explicit NotFoundError(const std::string& m) : Error(ErrorCode::kNotFound, m) {}
};
class DCP_CORE_EXPORT AlreadyExistsError : public Error {
 public:
  explicit AlreadyExistsError(const std::string& m) : Error(ErrorCode::kAlreadyExists, m) {}
};
class DCP_CORE_EXPORT StorageError : public Error {
 public:
  StorageError(const std::string& m, int err = 0, bool retryable = false)
      : Error(ErrorCode::kStorage, m, retryable), errno_(err) {}
  // The errno behind the failure, 0 when there is none.
  int error_number() const noexcept { return errno_; }

 private:
  int errno_;
};
class DCP_CORE_EXPORT CorruptionError : public Error {
 public:
  explicit CorruptionError(const std::string& m) : Error(ErrorCode::kCorruption, m) {}
};
class DCP_CORE_EXPORT PlanMismatchError : public Error {
 public:
  explicit PlanMismatchError(const std::string& m) : Error(ErrorCode::kPlanMismatch, m) {}
};
class DCP_CORE_EXPORT ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& m) : Error(ErrorCode::kConfig, m) {}
};
class DCP_CORE_EXPORT TimeoutError : public Error {
 public:
  explicit TimeoutError(const std::string& m) : Error(ErrorCode::kTimeout, m, true) {}
};
class DCP_CORE_EXPORT PeerLostError : public Error {
 public:
  explicit PeerLostError(const std::string& m) : Error(ErrorCode::kPeerLost, m) {}
};

// One rank's failure inside a protocol step.
struct DCP_CORE_EXPORT RankFailure {
  int rank = 0;
  std::string step;  // "local_plan", "global_plan", "write_data", "finish", "read_data", ...
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  bool retryable = false;  // the failing rank's Error::retryable()
};

// Thrown by save/load (and the checked rounds of collectives.h) on every
// rank when any rank failed: all ranks see the same list of failures,
// the failing rank too.
class DCP_CORE_EXPORT CheckpointError : public Error {
 public:
  CheckpointError(std::string operation, std::vector<RankFailure> failures);

  const std::string& operation() const noexcept { return operation_; }
  const std::vector<RankFailure>& failures() const noexcept { return failures_; }
  // The code of the first failure (kCheckpoint when there is none).
  ErrorCode root_code() const noexcept;

 private:
  std::string operation_;
  std::vector<RankFailure> failures_;
};

// The error text of an errno value ("No such file or directory").
DCP_CORE_EXPORT std::string errno_text(int err);

// Throws the error for a failed system call: "<what> '<path>': <errno text>".
// NotFoundError for ENOENT, else a StorageError, retryable as the table at
// the top of this file says.
[[noreturn]] DCP_CORE_EXPORT void throw_errno(const std::string& what, const std::string& path,
                                              int err);

}  // namespace dcp
