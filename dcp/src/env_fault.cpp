// FaultInjectionEnv (dcp/fault_injection_env.h): counts and records every
// call, injects errors and power cuts, and undoes on reboot() what a power
// cut may lose.
//
// How a cut is undone: each file written through the Env has a FileData
// (its synced size), found by its current path; each create, mkdir, rename
// and removal is a MetaOp until sync_dir() of the directories holding its
// entries makes it durable. Directories have identities (dir_ids), so a
// sync of a directory's new name covers what was done under its old one.
// Removed files wait in the trash directory so that a removal can be
// undone. reboot() first truncates files to what they may keep, then undoes
// MetaOps newest first; each undo checks that the entries are as the op
// left them (false: a later kept op depends on it, so it is kept too).
#include "dcp/fault_injection_env.h"

#include <atomic>
#include <cerrno>
#include <limits>
#include <map>
#include <mutex>
#include <random>

#include "dcp/error.h"
#include "dcp/thread_annotations.h"
#include "env.h"

namespace dcp {

const char* fault_op_name(FaultOp op) {
  switch (op) {
    case FaultOp::kCreate:
      return "create";
    case FaultOp::kAppend:
      return "append";
    case FaultOp::kSync:
      return "sync";
    case FaultOp::kClose:
      return "close";
    case FaultOp::kRead:
      return "read";
    case FaultOp::kStat:
      return "stat";
    case FaultOp::kMkdir:
      return "mkdir";
    case FaultOp::kRename:
      return "rename";
    case FaultOp::kRemove:
      return "remove";
    case FaultOp::kSyncDir:
      return "sync_dir";
    case FaultOp::kLock:
      return "lock";
    default:
      return "ops";
  }
}

namespace {

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

std::string normalize(std::string p) {
  std::string out;
  for (char c : p)
    if (!(c == '/' && !out.empty() && out.back() == '/')) out += c;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool under(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

// Moves every key equal to or under `from` to the same place under `to`.
template <typename Map>
void rekey(Map& m, const std::string& from, const std::string& to) {
  std::vector<std::pair<std::string, typename Map::mapped_type>> moved;
  for (auto it = m.begin(); it != m.end();) {
    if (under(it->first, from)) {
      moved.emplace_back(to + it->first.substr(from.size()), std::move(it->second));
      it = m.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& kv : moved) m[kv.first] = std::move(kv.second);
}

template <typename Map>
void erase_under(Map& m, const std::string& dir) {
  for (auto it = m.begin(); it != m.end();)
    it = under(it->first, dir) ? m.erase(it) : std::next(it);
}

struct FileData {
  uint64_t synced = 0;  // bytes made durable by sync()
};

struct MetaOp {
  enum Kind { kCreateFile, kMkdir, kRename, kRemoveFile, kRemoveDir };
  MetaOp(Kind k, std::string p, std::string t = "")
      : kind(k), path(std::move(p)), to(std::move(t)) {}
  Kind kind;
  std::string path;   // the entry (a rename's source)
  std::string to;     // a rename's destination
  std::string trash;  // a removed file, or the file a create or rename replaced
  bool replaced_empty_dir = false;
  uint64_t dir_a = 0, dir_b = 0;  // the directories holding the entries
  bool durable_a = false, durable_b = false;
};

}  // namespace

struct FaultInjectionEnv::State {
  Env* target;
  std::string trash_dir;

  Mutex mu;
  uint64_t ops DCP_GUARDED_BY(mu) = 0;
  std::vector<FaultRecord> records DCP_GUARDED_BY(mu);
  bool armed DCP_GUARDED_BY(mu) = false;
  FaultOp fault_ops DCP_GUARDED_BY(mu) = FaultOp::kAll;
  uint64_t fault_n DCP_GUARDED_BY(mu) = 0;
  int fault_err DCP_GUARDED_BY(mu) = 0;
  bool short_write DCP_GUARDED_BY(mu) = false;
  bool disk_full DCP_GUARDED_BY(mu) = false;
  std::atomic<bool> forward_syncs{true};
  uint64_t cut_at DCP_GUARDED_BY(mu) = kNever;
  bool cut DCP_GUARDED_BY(mu) = false;
  bool cut_reported DCP_GUARDED_BY(mu) = false;
  std::function<void()> on_cut DCP_GUARDED_BY(mu), before_op DCP_GUARDED_BY(mu);

  std::map<std::string, std::shared_ptr<FileData>> files DCP_GUARDED_BY(mu);  // by current path
  std::map<std::string, uint64_t> dir_ids DCP_GUARDED_BY(mu);
  uint64_t next_dir_id DCP_GUARDED_BY(mu) = 1;
  std::vector<MetaOp> pending DCP_GUARDED_BY(mu);
  uint64_t trash_seq DCP_GUARDED_BY(mu) = 0;

  // What gate() decided for an operation that may go ahead.
  struct Verdict {
    int err = 0;  // an injected errno, 0 for none
    bool short_write = false;
    uint64_t index = 0;
  };

  uint64_t dir_id(const std::string& path) DCP_REQUIRES(mu) {
    auto [it, fresh] = dir_ids.emplace(normalize(path), 0);
    if (fresh) it->second = next_dir_id++;
    return it->second;
  }

  std::string next_trash() DCP_REQUIRES(mu) {
    return trash_dir + "/" + std::to_string(trash_seq++);
  }

  // Counts and records the operation; throws at and after a cut. Called
  // with mu held; releases it only to call on_cut.
  Verdict gate(FaultOp op, const std::string& what) DCP_REQUIRES(mu) {
    Verdict v;
    v.index = ops++;
    records.push_back(FaultRecord{v.index, op, what});
    if (!cut && v.index >= cut_at) cut = true;
    if (cut) {
      const bool report = !cut_reported;
      cut_reported = true;
      const std::string msg = std::string("cannot ") + fault_op_name(op) + " '" + what +
                              "': " + errno_text(EIO) + " (power cut before operation " +
                              std::to_string(v.index) + ", FaultInjectionEnv)";
      if (report && on_cut) {
        auto f = on_cut;
        mu.unlock();
        try {
          f();
        } catch (...) {
          mu.lock();
          throw;
        }
        mu.lock();
      }
      throw StorageError(msg, EIO);
    }
    if (armed && any_of(fault_ops, op)) {
      if (fault_n == 0) {
        armed = false;
        v.err = fault_err;
        v.short_write = short_write && op == FaultOp::kAppend;
        return v;
      }
      --fault_n;
    }
    if (disk_full && (op == FaultOp::kCreate || op == FaultOp::kAppend)) v.err = ENOSPC;
    return v;
  }

  [[noreturn]] static void fail(const Verdict& v, const std::string& verb,
                                const std::string& path) {
    throw StorageError("cannot " + verb + " '" + path + "': " + errno_text(v.err) +
                           " (injected by FaultInjectionEnv at operation " +
                           std::to_string(v.index) + ")",
                       v.err, v.err == EINTR);
  }

  // The before_op hook, called under no lock.
  void call_before_op() {
    std::function<void()> f;
    {
      MutexLock lock(mu);
      f = before_op;
    }
    if (f) f();
  }

  // Before an operation outside the lock (appends, reads).
  Verdict enter(FaultOp op, const std::string& what) {
    call_before_op();
    MutexLock lock(mu);
    return gate(op, what);
  }
};

namespace {

using State = FaultInjectionEnv::State;

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(std::shared_ptr<State> s, std::unique_ptr<WritableFile> f,
                    std::shared_ptr<FileData> d)
      : s_(std::move(s)), f_(std::move(f)), d_(std::move(d)) {}
  void append(const void* data, size_t n) override {
    const auto v = s_->enter(FaultOp::kAppend, f_->path());
    if (v.err) {
      if (v.short_write && n > 1) f_->append(data, n / 2);
      State::fail(State::Verdict{v.short_write ? ENOSPC : v.err, false, v.index}, "write to",
                  f_->path());
    }
    f_->append(data, n);
  }
  void start_writeback() override { f_->start_writeback(); }
  void sync() override {
    const auto v = s_->enter(FaultOp::kSync, f_->path());
    if (v.err) State::fail(v, "fdatasync", f_->path());
    const uint64_t size = f_->size();
    if (s_->forward_syncs) f_->sync();
    MutexLock lock(s_->mu);
    d_->synced = size;
  }
  void close() override {
    const auto v = s_->enter(FaultOp::kClose, f_->path());
    if (v.err) State::fail(v, "close", f_->path());
    f_->close();
  }
  uint64_t size() const override { return f_->size(); }
  const std::string& path() const override { return f_->path(); }

 private:
  std::shared_ptr<State> s_;
  std::unique_ptr<WritableFile> f_;
  std::shared_ptr<FileData> d_;
};

class FaultRandomAccessFile final : public RandomAccessFile {
 public:
  FaultRandomAccessFile(std::shared_ptr<State> s, std::unique_ptr<RandomAccessFile> f)
      : s_(std::move(s)), f_(std::move(f)) {}
  size_t read(uint64_t offset, size_t n, void* dst) const override {
    const auto v = s_->enter(FaultOp::kRead, f_->path());
    if (v.err) State::fail(v, "read", f_->path());
    return f_->read(offset, n, dst);
  }
  // One read operation, as the POSIX file makes it one call.
  size_t read_vectored(uint64_t offset, const ReadSlice* slices, size_t count) const override {
    const auto v = s_->enter(FaultOp::kRead, f_->path());
    if (v.err) State::fail(v, "read", f_->path());
    return f_->read_vectored(offset, slices, count);
  }
  uint64_t size() const override { return f_->size(); }
  const std::string& path() const override { return f_->path(); }

 private:
  std::shared_ptr<State> s_;
  std::unique_ptr<RandomAccessFile> f_;
};

}  // namespace

FaultInjectionEnv::FaultInjectionEnv(Env* target, std::string trash_dir)
    : EnvWrapper(target), state_(std::make_shared<State>()) {
  state_->target = target;
  state_->trash_dir = normalize(std::move(trash_dir));
  if (!state_->trash_dir.empty()) target->create_dirs(state_->trash_dir);
}

FaultInjectionEnv::~FaultInjectionEnv() = default;

void FaultInjectionEnv::fail_nth(FaultOp ops, uint64_t n, int err, bool short_write) {
  MutexLock lock(state_->mu);
  state_->armed = true;
  state_->fault_ops = ops;
  state_->fault_n = n;
  state_->fault_err = err;
  state_->short_write = short_write;
}

void FaultInjectionEnv::set_disk_full(bool full) {
  MutexLock lock(state_->mu);
  state_->disk_full = full;
}

void FaultInjectionEnv::power_cut_at(uint64_t k) {
  MutexLock lock(state_->mu);
  state_->cut_at = k;
}

void FaultInjectionEnv::power_cut() {
  MutexLock lock(state_->mu);
  state_->cut = true;
}

bool FaultInjectionEnv::is_cut() const {
  MutexLock lock(state_->mu);
  return state_->cut;
}

void FaultInjectionEnv::set_on_cut(std::function<void()> f) {
  MutexLock lock(state_->mu);
  state_->on_cut = std::move(f);
}

void FaultInjectionEnv::set_before_op(std::function<void()> f) {
  MutexLock lock(state_->mu);
  state_->before_op = std::move(f);
}

void FaultInjectionEnv::set_forward_syncs(bool forward) {
  MutexLock lock(state_->mu);
  state_->forward_syncs = forward;
}

void FaultInjectionEnv::disarm() {
  MutexLock lock(state_->mu);
  state_->armed = false;
  state_->disk_full = false;
  state_->cut_at = kNever;
}

uint64_t FaultInjectionEnv::operations() const {
  MutexLock lock(state_->mu);
  return state_->ops;
}

std::string FaultInjectionEnv::operation(uint64_t k) const {
  MutexLock lock(state_->mu);
  for (const auto& r : state_->records)
    if (r.index == k) return std::string(fault_op_name(r.op)) + " " + r.path;
  return "";
}

std::vector<FaultRecord> FaultInjectionEnv::records() const {
  MutexLock lock(state_->mu);
  return state_->records;
}

void FaultInjectionEnv::clear_records() {
  MutexLock lock(state_->mu);
  state_->records.clear();
}

std::unique_ptr<WritableFile> FaultInjectionEnv::new_writable_file(const std::string& path_in) {
  State& s = *state_;
  const std::string path = normalize(path_in);
  s.call_before_op();
  MutexLock lock(s.mu);
  const auto v = s.gate(FaultOp::kCreate, path);
  if (v.err) State::fail(v, "create", path);
  MetaOp op{MetaOp::kCreateFile, path};
  const bool existed = s.target->file_exists(path);
  if (existed && !s.trash_dir.empty()) {
    op.trash = s.next_trash();
    s.target->rename_file(path, op.trash);
    rekey(s.files, path, op.trash);
  }
  std::unique_ptr<WritableFile> f;
  try {
    f = s.target->new_writable_file(path);
  } catch (...) {
    if (!op.trash.empty()) {
      s.target->rename_file(op.trash, path);
      rekey(s.files, op.trash, path);
    }
    throw;
  }
  auto data = std::make_shared<FileData>();
  s.files[path] = data;
  if (!existed || !op.trash.empty()) {
    op.dir_a = s.dir_id(internal::parent_path(path));
    op.durable_b = true;
    s.pending.push_back(std::move(op));
  }
  return std::make_unique<FaultWritableFile>(state_, std::move(f), std::move(data));
}

std::unique_ptr<RandomAccessFile> FaultInjectionEnv::new_random_access_file(
    const std::string& path) {
  const auto v = state_->enter(FaultOp::kRead, path);
  if (v.err) State::fail(v, "open", path);
  return std::make_unique<FaultRandomAccessFile>(state_,
                                                 state_->target->new_random_access_file(path));
}

bool FaultInjectionEnv::file_exists(const std::string& path) {
  const auto v = state_->enter(FaultOp::kStat, path);
  if (v.err) State::fail(v, "stat", path);
  return state_->target->file_exists(path);
}

bool FaultInjectionEnv::dir_exists(const std::string& path) {
  const auto v = state_->enter(FaultOp::kStat, path);
  if (v.err) State::fail(v, "stat", path);
  return state_->target->dir_exists(path);
}

std::vector<std::string> FaultInjectionEnv::list_dir(const std::string& path) {
  const auto v = state_->enter(FaultOp::kStat, path);
  if (v.err) State::fail(v, "list", path);
  return state_->target->list_dir(path);
}

void FaultInjectionEnv::create_dirs(const std::string& path_in) {
  State& s = *state_;
  const std::string path = normalize(path_in);
  s.call_before_op();
  MutexLock lock(s.mu);
  const auto v = s.gate(FaultOp::kMkdir, path);
  if (v.err) State::fail(v, "create directory", path);
  std::vector<std::string> missing;  // outermost last
  for (std::string p = path; !p.empty() && p != "." && p != "/" && !s.target->dir_exists(p);
       p = internal::parent_path(p))
    missing.push_back(p);
  s.target->create_dirs(path);
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    erase_under(s.dir_ids, *it);
    MetaOp op{MetaOp::kMkdir, *it};
    op.dir_a = s.dir_id(internal::parent_path(*it));
    op.durable_b = true;
    s.pending.push_back(std::move(op));
    s.dir_id(*it);
  }
}

void FaultInjectionEnv::rename_file(const std::string& from_in, const std::string& to_in) {
  State& s = *state_;
  const std::string from = normalize(from_in), to = normalize(to_in);
  s.call_before_op();
  MutexLock lock(s.mu);
  const auto v = s.gate(FaultOp::kRename, from + " -> " + to);
  if (v.err) State::fail(v, "rename to '" + to + "' from", from);
  MetaOp op{MetaOp::kRename, from, to};
  const bool from_is_dir = s.target->dir_exists(from);
  if (!from_is_dir && s.target->file_exists(to) && !s.trash_dir.empty()) {
    op.trash = s.next_trash();
    s.target->rename_file(to, op.trash);
    rekey(s.files, to, op.trash);
  } else if (from_is_dir && s.target->dir_exists(to)) {
    op.replaced_empty_dir = true;
  }
  try {
    s.target->rename_file(from, to);
  } catch (...) {
    if (!op.trash.empty()) {
      s.target->rename_file(op.trash, to);
      rekey(s.files, op.trash, to);
    }
    throw;
  }
  erase_under(s.files, to);
  rekey(s.files, from, to);
  erase_under(s.dir_ids, to);
  rekey(s.dir_ids, from, to);
  op.dir_a = s.dir_id(internal::parent_path(from));
  op.dir_b = s.dir_id(internal::parent_path(to));
  s.pending.push_back(std::move(op));
}

void FaultInjectionEnv::remove_file(const std::string& path_in) {
  State& s = *state_;
  const std::string path = normalize(path_in);
  s.call_before_op();
  MutexLock lock(s.mu);
  const auto v = s.gate(FaultOp::kRemove, path);
  if (v.err) State::fail(v, "remove", path);
  if (!s.target->file_exists(path) || s.trash_dir.empty()) {
    s.target->remove_file(path);
    erase_under(s.files, path);
    return;
  }
  MetaOp op{MetaOp::kRemoveFile, path};
  op.trash = s.next_trash();
  s.target->rename_file(path, op.trash);
  rekey(s.files, path, op.trash);
  op.dir_a = s.dir_id(internal::parent_path(path));
  op.durable_b = true;
  s.pending.push_back(std::move(op));
}

void FaultInjectionEnv::remove_dir_recursively(const std::string& path_in) {
  State& s = *state_;
  const std::string path = normalize(path_in);
  if (!s.target->dir_exists(path)) {
    remove_file(path);
    return;
  }
  for (const auto& name : s.target->list_dir(path)) {
    const std::string child = path + "/" + name;
    if (s.target->dir_exists(child))
      remove_dir_recursively(child);
    else
      remove_file(child);
  }
  s.call_before_op();
  MutexLock lock(s.mu);
  const auto v = s.gate(FaultOp::kRemove, path + "/");
  if (v.err) State::fail(v, "remove", path);
  s.target->remove_dir_recursively(path);
  erase_under(s.files, path);
  MetaOp op{MetaOp::kRemoveDir, path};
  op.dir_a = s.dir_id(internal::parent_path(path));
  op.durable_b = true;
  erase_under(s.dir_ids, path);
  s.pending.push_back(std::move(op));
}

void FaultInjectionEnv::sync_dir(const std::string& path_in) {
  State& s = *state_;
  const std::string path = normalize(path_in);
  s.call_before_op();
  MutexLock lock(s.mu);
  const auto v = s.gate(FaultOp::kSyncDir, path);
  if (v.err) State::fail(v, "fsync directory", path);
  if (s.forward_syncs) s.target->sync_dir(path);
  const uint64_t id = s.dir_id(path);
  std::vector<MetaOp> still;
  for (auto& op : s.pending) {
    if (op.dir_a == id) op.durable_a = true;
    if (op.dir_b == id) op.durable_b = true;
    if (!(op.durable_a && op.durable_b)) still.push_back(std::move(op));
  }
  s.pending = std::move(still);
}

std::unique_ptr<FileLock> FaultInjectionEnv::lock_file(const std::string& path) {
  const auto v = state_->enter(FaultOp::kLock, path);
  if (v.err) State::fail(v, "lock", path);
  return state_->target->lock_file(path);
}

RebootReport FaultInjectionEnv::reboot(RebootMode mode, uint64_t seed) {
  State& s = *state_;
  MutexLock lock(s.mu);
  Env* t = s.target;
  RebootReport report;
  std::mt19937_64 rng(seed);
  const bool random = mode == RebootMode::kRandom;
  auto exists = [&](const std::string& p) { return t->file_exists(p) || t->dir_exists(p); };

  // 1. File data: each file keeps its synced bytes (kRandom: and maybe more).
  for (const auto& [path, data] : s.files) {
    if (!t->file_exists(path)) continue;
    std::string bytes = t->read_file(path);
    uint64_t keep = data->synced;
    if (random && bytes.size() > keep && (rng() & 1)) keep += rng() % (bytes.size() - keep + 1);
    if (keep >= bytes.size()) continue;
    report.files_truncated++;
    report.bytes_dropped += bytes.size() - keep;
    bytes.resize(keep);
    t->write_file(path, bytes, true);
  }

  // 2. Directory entries, newest first.
  for (auto it = s.pending.rbegin(); it != s.pending.rend(); ++it) {
    const MetaOp& op = *it;
    if (random && (rng() & 1)) {
      report.entries_kept++;
      continue;
    }
    bool undone = false;
    switch (op.kind) {
      case MetaOp::kCreateFile:
        if (t->file_exists(op.path)) {
          t->remove_file(op.path);
          if (!op.trash.empty() && t->file_exists(op.trash)) t->rename_file(op.trash, op.path);
          undone = true;
        }
        break;
      case MetaOp::kMkdir:
        if (t->dir_exists(op.path)) {
          t->remove_dir_recursively(op.path);
          undone = true;
        }
        break;
      case MetaOp::kRename:
        if (exists(op.to) && !exists(op.path) && t->dir_exists(internal::parent_path(op.path))) {
          t->rename_file(op.to, op.path);
          if (!op.trash.empty() && t->file_exists(op.trash)) t->rename_file(op.trash, op.to);
          if (op.replaced_empty_dir) t->create_dirs(op.to);
          undone = true;
        }
        break;
      case MetaOp::kRemoveFile:
        if (t->file_exists(op.trash) && !exists(op.path) &&
            t->dir_exists(internal::parent_path(op.path))) {
          t->rename_file(op.trash, op.path);
          undone = true;
        }
        break;
      case MetaOp::kRemoveDir:
        if (!exists(op.path) && t->dir_exists(internal::parent_path(op.path))) {
          t->create_dirs(op.path);
          undone = true;
        }
        break;
    }
    if (undone)
      report.entries_undone++;
    else
      report.entries_kept++;
  }

  // 3. What is on disk now is durable.
  if (!s.trash_dir.empty()) {
    t->remove_dir_recursively(s.trash_dir);
    t->create_dirs(s.trash_dir);
  }
  s.files.clear();
  s.pending.clear();
  s.dir_ids.clear();
  s.cut = false;
  s.cut_reported = false;
  s.cut_at = kNever;
  s.armed = false;
  s.disk_full = false;
  return report;
}

}  // namespace dcp
