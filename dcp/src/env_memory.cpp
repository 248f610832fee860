// memory_env(): the in-memory Env of "memory://" checkpoints (dcp/env.h).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "dcp/error.h"
#include "dcp/memory_storage.h"
#include "dcp/thread_annotations.h"
#include "env.h"

namespace dcp {

using namespace internal;

namespace {

// The process-wide store of the memory backend. File contents are shared
// pointers so readers keep what they opened even if it is replaced.
struct MemoryStore {
  Mutex mu;
  std::map<std::string, std::shared_ptr<std::string>> files DCP_GUARDED_BY(mu);
  std::set<std::string> dirs DCP_GUARDED_BY(mu);
  std::set<std::string> locks DCP_GUARDED_BY(mu);
};

MemoryStore& store() {
  static MemoryStore* s = new MemoryStore();  // never destroyed: safe at exit
  return *s;
}

std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

class MemoryWritableFile final : public WritableFile {
 public:
  MemoryWritableFile(std::string path, std::shared_ptr<std::string> data)
      : path_(std::move(path)), data_(std::move(data)) {}
  void append(const void* p, size_t n) override {
    MutexLock lock(store().mu);
    data_->append(static_cast<const char*>(p), n);
  }
  void sync() override {}
  void close() override {}
  uint64_t size() const override {
    MutexLock lock(store().mu);
    return data_->size();
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  std::shared_ptr<std::string> data_;
};

class MemoryRandomAccessFile final : public RandomAccessFile {
 public:
  MemoryRandomAccessFile(std::string path, std::shared_ptr<std::string> data)
      : path_(std::move(path)), data_(std::move(data)) {}
  size_t read(uint64_t offset, size_t n, void* dst) const override {
    MutexLock lock(store().mu);
    if (offset >= data_->size()) return 0;
    n = std::min<size_t>(n, data_->size() - offset);
    std::memcpy(dst, data_->data() + offset, n);
    return n;
  }
  uint64_t size() const override {
    MutexLock lock(store().mu);
    return data_->size();
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  std::shared_ptr<std::string> data_;
};

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw_errno(what, "memory://" + path, err);
}

bool under(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

class MemoryFileLock final : public FileLock {
 public:
  explicit MemoryFileLock(std::string path) : path_(std::move(path)) {}
  ~MemoryFileLock() override {
    MutexLock lock(store().mu);
    store().locks.erase(path_);
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
};

// Directories are a set of paths ("" is the root, always there); a path's
// entries are the files and directories whose parent it is.
class MemoryEnv final : public Env {
 public:
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path) override {
    MutexLock lock(store().mu);
    check_parent("cannot create", path);
    if (store().dirs.count(path)) fail("cannot create", path, EISDIR);
    auto data = std::make_shared<std::string>();
    store().files[path] = data;
    return std::make_unique<MemoryWritableFile>(path, data);
  }
  std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& path) override {
    MutexLock lock(store().mu);
    auto it = store().files.find(path);
    if (it == store().files.end()) fail("cannot open", path, ENOENT);
    return std::make_unique<MemoryRandomAccessFile>(path, it->second);
  }
  bool file_exists(const std::string& path) override {
    MutexLock lock(store().mu);
    return store().files.count(path) > 0;
  }
  bool dir_exists(const std::string& path) override {
    MutexLock lock(store().mu);
    return path.empty() || store().dirs.count(path) > 0;
  }
  void create_dirs(const std::string& path) override {
    MutexLock lock(store().mu);
    for (std::string p = path; !p.empty(); p = parent_of(p))
      if (store().files.count(p)) fail("cannot create directory", path, EEXIST);
    for (std::string p = path; !p.empty(); p = parent_of(p)) store().dirs.insert(p);
  }
  void rename_file(const std::string& from, const std::string& to) override {
    MutexLock lock(store().mu);
    const std::string what = "cannot rename to 'memory://" + to + "' from";
    check_parent(what, to);
    auto it = store().files.find(from);
    if (it != store().files.end()) {
      if (store().dirs.count(to)) fail(what, from, EISDIR);
      auto data = it->second;
      store().files.erase(it);
      store().files[to] = std::move(data);
      return;
    }
    if (!store().dirs.count(from)) fail(what, from, ENOENT);
    if (from == to) return;
    if (store().files.count(to)) fail(what, from, ENOTDIR);
    if (under(to, from)) fail(what, from, EINVAL);
    if (!entries(to).empty()) fail(what, from, ENOTEMPTY);
    move_tree(from, to);
  }
  void remove_file(const std::string& path) override {
    MutexLock lock(store().mu);
    store().files.erase(path);
  }
  void remove_dir_recursively(const std::string& path) override {
    MutexLock lock(store().mu);
    store().files.erase(path);
    if (path.empty()) fail("cannot remove", path, EBUSY);
    store().dirs.erase(path);
    erase_under(store().files, path);
    erase_under(store().dirs, path);
  }
  std::vector<std::string> list_dir(const std::string& path) override {
    MutexLock lock(store().mu);
    if (store().files.count(path)) fail("cannot list directory", path, ENOTDIR);
    if (!path.empty() && !store().dirs.count(path)) fail("cannot list directory", path, ENOENT);
    return entries(path);
  }
  void sync_dir(const std::string&) override {}
  std::unique_ptr<FileLock> lock_file(const std::string& path) override {
    MutexLock lock(store().mu);
    if (!store().files.count(path)) {
      check_parent("cannot open lock file", path);
      if (store().dirs.count(path)) fail("cannot open lock file", path, EISDIR);
      store().files[path] = std::make_shared<std::string>();
    }
    if (!store().locks.insert(path).second) return nullptr;
    return std::make_unique<MemoryFileLock>(path);
  }

 private:
  // Every helper below runs with store().mu held.
  static void check_parent(const std::string& what, const std::string& path)
      DCP_REQUIRES(store().mu) {
    const std::string parent = parent_of(path);
    if (parent.empty() || store().dirs.count(parent)) return;
    fail(what, path, store().files.count(parent) ? ENOTDIR : ENOENT);
  }
  static std::vector<std::string> entries(const std::string& path) DCP_REQUIRES(store().mu) {
    std::vector<std::string> names;
    const std::string prefix = path.empty() ? "" : path + "/";
    auto add = [&](const std::string& p) {
      if (p.compare(0, prefix.size(), prefix) == 0 && p.size() > prefix.size() &&
          p.find('/', prefix.size()) == std::string::npos)
        names.push_back(p.substr(prefix.size()));
    };
    for (const auto& kv : store().files) add(kv.first);
    for (const auto& d : store().dirs) add(d);
    return names;
  }
  template <typename C>
  static void erase_under(C& c, const std::string& dir) {
    const std::string prefix = dir + "/";
    auto it = c.lower_bound(prefix);
    while (it != c.end() && key(*it).compare(0, prefix.size(), prefix) == 0) it = c.erase(it);
  }
  static const std::string& key(const std::string& s) { return s; }
  template <typename V>
  static const std::string& key(const std::pair<const std::string, V>& kv) {
    return kv.first;
  }
  static void move_tree(const std::string& from, const std::string& to) DCP_REQUIRES(store().mu) {
    auto moved = [&](const std::string& p) { return to + p.substr(from.size()); };
    std::map<std::string, std::shared_ptr<std::string>> files;
    for (const auto& kv : store().files)
      if (under(kv.first, from)) files[moved(kv.first)] = kv.second;
    std::set<std::string> dirs;
    for (const auto& d : store().dirs)
      if (under(d, from)) dirs.insert(moved(d));
    erase_under(store().files, from);
    erase_under(store().dirs, from);
    store().dirs.erase(from);
    store().dirs.erase(to);
    erase_under(store().dirs, to);
    store().files.insert(files.begin(), files.end());
    store().dirs.insert(dirs.begin(), dirs.end());
    store().dirs.insert(to);
  }
};

}  // namespace

Env* memory_env() {
  static MemoryEnv env;
  return &env;
}

// The file-system writer and reader over the memory store.
std::shared_ptr<StorageWriter> make_memory_writer(const std::string& checkpoint_id,
                                                  FileSystemWriterOptions options) {
  if (!options.env) options.env = memory_env();
  return make_filesystem_writer("memory://" + env_path(checkpoint_id), options);
}
std::shared_ptr<StorageReader> make_memory_reader(const std::string& checkpoint_id,
                                                  FileSystemReaderOptions options) {
  if (!options.env) options.env = memory_env();
  return make_filesystem_reader("memory://" + env_path(checkpoint_id), options);
}

std::vector<std::string> memory_checkpoint_files(const std::string& checkpoint_id) {
  return memory_env()->list_dir(env_path(checkpoint_id));
}

std::string memory_checkpoint_file(const std::string& checkpoint_id, const std::string& name) {
  std::string copy;
  edit_memory_checkpoint_file(checkpoint_id, name, [&](std::string& data) { copy = data; });
  return copy;
}

void edit_memory_checkpoint_file(const std::string& checkpoint_id, const std::string& name,
                                 const std::function<void(std::string&)>& edit) {
  MutexLock lock(store().mu);
  const std::string path = join_path(env_path(checkpoint_id), name);
  auto it = store().files.find(path);
  if (it == store().files.end()) throw NotFoundError("no in-memory file 'memory://" + path + "'");
  edit(*it->second);  // under the store's lock, as every reader and writer of it
}

void clear_memory_checkpoints(const std::string& prefix) {
  const std::string p = env_path(prefix);
  MutexLock lock(store().mu);
  for (auto it = store().files.begin(); it != store().files.end();)
    it = it->first.compare(0, p.size(), p) == 0 ? store().files.erase(it) : std::next(it);
  for (auto it = store().dirs.begin(); it != store().dirs.end();)
    it =
        (!it->empty() && it->compare(0, p.size(), p) == 0) ? store().dirs.erase(it) : std::next(it);
}

}  // namespace dcp
