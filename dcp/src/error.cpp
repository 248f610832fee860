#include "dcp/error.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "dcp/replicas.h"

namespace dcp {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kInvalidArgument:
      return "invalid argument";
    case ErrorCode::kNotFound:
      return "not found";
    case ErrorCode::kAlreadyExists:
      return "already exists";
    case ErrorCode::kStorage:
      return "storage";
    case ErrorCode::kCorruption:
      return "corruption";
    case ErrorCode::kPlanMismatch:
      return "plan mismatch";
    case ErrorCode::kConfig:
      return "config";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kPeerLost:
      return "peer lost";
    case ErrorCode::kCheckpoint:
      return "checkpoint";
  }
  return "unknown";
}

namespace {
std::string summarize(const std::string& operation, const std::vector<RankFailure>& failures) {
  std::string s = operation + " failed on " + std::to_string(failures.size()) +
                  (failures.size() == 1 ? " rank" : " ranks");
  for (const auto& f : failures) {
    s += "\n  rank " + std::to_string(f.rank) + " in " + f.step + " (" + error_code_name(f.code) +
         "): " + f.message;
  }
  return s;
}
}  // namespace

const char* replica_check_name(ReplicaCheck check) {
  switch (check) {
    case ReplicaCheck::kError:
      return "error";
    case ReplicaCheck::kWarn:
      return "warn";
    case ReplicaCheck::kOff:
      return "off";
  }
  return "unknown";
}

ReplicaCheck replica_check_from_name(const std::string& name) {
  for (ReplicaCheck c : {ReplicaCheck::kError, ReplicaCheck::kWarn, ReplicaCheck::kOff})
    if (name == replica_check_name(c)) return c;
  throw InvalidArgumentError("unknown replica check '" + name + "' (known: error, warn, off)");
}

CheckpointError::CheckpointError(std::string operation, std::vector<RankFailure> failures)
    : Error(ErrorCode::kCheckpoint, summarize(operation, failures),
            !failures.empty() && std::all_of(failures.begin(), failures.end(),
                                             [](const RankFailure& f) { return f.retryable; })),
      operation_(std::move(operation)),
      failures_(std::move(failures)) {}

ErrorCode CheckpointError::root_code() const noexcept {
  return failures_.empty() ? ErrorCode::kCheckpoint : failures_.front().code;
}

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r returns the message (which may not be buf).
  return std::string(strerror_r(err, buf, sizeof buf));
}

void throw_errno(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " '" + path + "': " + errno_text(err);
  if (err == ENOENT) throw NotFoundError(msg);
  const bool retryable = err == EINTR || err == EAGAIN || err == EIO || err == EBUSY ||
                         err == ENOSPC || err == EDQUOT || err == ETIMEDOUT;
  throw StorageError(msg, err, retryable);
}

}  // namespace dcp
