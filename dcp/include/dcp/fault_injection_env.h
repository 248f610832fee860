// FaultInjectionEnv: an Env for tests of durability (leveldb's
// fault_injection_test, rocksdb's FaultInjectionTestFS). It forwards every
// call to a real Env (posix_env() by default), numbers and records each one,
// and can
//   - fail one chosen operation with an errno (EIO, ENOSPC, EDQUOT, EINTR),
//     or as a short write (part of the data written, then ENOSPC);
//   - keep failing writes with ENOSPC while the disk is "full";
//   - simulate a power cut: from operation k on, every call fails with EIO
//     ("power cut"), and reboot() then undoes on the real files what a
//     machine losing power may lose.
//
// What reboot() may lose (POSIX's promises, no more):
//   - a file's bytes not made durable by WritableFile::sync() (fdatasync);
//   - a create, rename or removal not made durable by sync_dir() of the
//     directory holding the entry (both directories for a rename), and a
//     directory made by create_dirs() whose parent was not synced after
//     (with all it holds).
// Directories are followed by identity: a sync_dir of "a/step_5" makes
// durable what was done in it while it was still called "a/tmp".
//
// RebootMode::kDropAll loses all of that (undone newest first).
// RebootMode::kRandom loses a random part, chosen by a seed: each file keeps
// a random length between its synced size and its size, and each undurable
// directory operation is kept or undone at random, in any order, except that
// an operation is kept when one kept after it depends on it (a file renamed
// after being created keeps its creation).
//
// Removed files are moved into `trash_dir` (it must be on the same file
// system, outside the tree under test) so that a removal can be undone;
// without a trash dir removals are real and reboot() cannot undo them.
// Files and directories that existed before the Env saw them are durable.
//
// Thread-safe. Paths are the target Env's. Operations are numbered from 0 in
// the order they reach the Env; with threads that order can vary between
// runs, so a test that cuts at operation k should print what it needs to be
// rerun (the operation's description: operation(k)).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dcp/env.h"
#include "dcp/export.h"

namespace dcp {

enum class FaultOp : uint32_t {
  kCreate = 1u << 0,   // new_writable_file
  kAppend = 1u << 1,   // WritableFile::append
  kSync = 1u << 2,     // WritableFile::sync
  kClose = 1u << 3,    // WritableFile::close
  kRead = 1u << 4,     // new_random_access_file, RandomAccessFile::read
  kStat = 1u << 5,     // file_exists, dir_exists, list_dir
  kMkdir = 1u << 6,    // create_dirs
  kRename = 1u << 7,   // rename_file
  kRemove = 1u << 8,   // remove_file, and each entry of remove_dir_recursively
  kSyncDir = 1u << 9,  // sync_dir
  kLock = 1u << 10,    // lock_file
  kWrites = (1u << 0) | (1u << 1) | (1u << 2) | (1u << 3),  // what writing a file does
  kMutations = kWrites | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9),
  kAll = 0x7ff,
};
constexpr FaultOp operator|(FaultOp a, FaultOp b) {
  return static_cast<FaultOp>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}
constexpr bool any_of(FaultOp set, FaultOp op) {
  return (static_cast<uint32_t>(set) & static_cast<uint32_t>(op)) != 0;
}
DCP_CORE_EXPORT const char* fault_op_name(FaultOp op);

// One recorded operation.
struct FaultRecord {
  uint64_t index = 0;
  FaultOp op = FaultOp::kStat;
  std::string path;  // for a rename, "from -> to"
};

enum class RebootMode { kDropAll, kRandom };

struct RebootReport {
  uint64_t files_truncated = 0;  // files that lost bytes
  uint64_t bytes_dropped = 0;
  uint64_t entries_undone = 0;  // creates, renames, removals, directories undone
  uint64_t entries_kept = 0;    // undurable ones that survived (kRandom)
};

class DCP_CORE_EXPORT FaultInjectionEnv : public EnvWrapper {
 public:
  explicit FaultInjectionEnv(Env* target = posix_env(), std::string trash_dir = "");
  ~FaultInjectionEnv() override;

  // --- Faults --------------------------------------------------------------
  // Fails the n-th (from 0, counted from this call) operation among `ops`
  // with `err` (EIO, ENOSPC, EDQUOT, EINTR, ...): it throws the StorageError
  // the real call would, naming the path and the errno text, and does
  // nothing else. With `short_write`, an append among them writes half its
  // bytes first, then fails with ENOSPC. One fault armed at a time.
  void fail_nth(FaultOp ops, uint64_t n, int err, bool short_write = false);
  // While set, every create and append fails with ENOSPC (a full disk);
  // everything else works, removals included.
  void set_disk_full(bool full);
  // A power cut before operation number k (absolute: operations() counts
  // them): operation k and all later ones fail with EIO.
  void power_cut_at(uint64_t k);
  // A power cut now.
  void power_cut();
  bool is_cut() const;
  // Called once, on the thread of the operation that meets the cut (under
  // no lock), e.g. to tell other processes.
  void set_on_cut(std::function<void()> f);
  // Called before each operation is counted (under no lock), e.g. to cut
  // when another process did.
  void set_before_op(std::function<void()> f);
  void disarm();  // no fault armed, not full; a cut stays until reboot()
  // With false, sync() and sync_dir() are recorded and counted as durable
  // but not passed to the target: the model, not the disk, decides what a
  // cut loses, so tests that never lose power for real run faster.
  void set_forward_syncs(bool forward);

  // Undoes what the cut may lose (see the top of this file), on the real
  // files; then the Env works again and everything on disk counts as
  // durable. Files still open through this Env must not be used again.
  RebootReport reboot(RebootMode mode = RebootMode::kDropAll, uint64_t seed = 0);

  // --- Record --------------------------------------------------------------
  uint64_t operations() const;  // operations counted so far
  // Operation k's description ("rename a -> b"), or "" when not recorded.
  std::string operation(uint64_t k) const;
  std::vector<FaultRecord> records() const;
  void clear_records();  // forgets the records; numbering goes on

  // --- Env -----------------------------------------------------------------
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path) override;
  std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& path) override;
  bool file_exists(const std::string& path) override;
  bool dir_exists(const std::string& path) override;
  void create_dirs(const std::string& path) override;
  void rename_file(const std::string& from, const std::string& to) override;
  void remove_file(const std::string& path) override;
  void remove_dir_recursively(const std::string& path) override;
  std::vector<std::string> list_dir(const std::string& path) override;
  void sync_dir(const std::string& path) override;
  std::unique_ptr<FileLock> lock_file(const std::string& path) override;

  struct State;  // internal

 private:
  std::shared_ptr<State> state_;
};

}  // namespace dcp
