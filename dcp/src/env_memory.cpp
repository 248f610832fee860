#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "dcp/error.h"
#include "dcp/memory_storage.h"
#include "env.h"

namespace dcp {

using namespace internal;

namespace {

// The process-wide store of the memory backend. File contents are shared
// pointers so readers keep what they opened even if it is replaced.
struct MemoryStore {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<std::string>> files;  // GUARDED_BY(mu)
  std::set<std::string> dirs;                                 // GUARDED_BY(mu)
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
    std::lock_guard<std::mutex> lock(store().mu);
    data_->append(static_cast<const char*>(p), n);
  }
  void sync() override {}
  void close() override {}
  uint64_t size() const override {
    std::lock_guard<std::mutex> lock(store().mu);
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
    std::lock_guard<std::mutex> lock(store().mu);
    if (offset >= data_->size()) return 0;
    n = std::min<size_t>(n, data_->size() - offset);
    std::memcpy(dst, data_->data() + offset, n);
    return n;
  }
  uint64_t size() const override {
    std::lock_guard<std::mutex> lock(store().mu);
    return data_->size();
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  std::shared_ptr<std::string> data_;
};

class MemoryEnv final : public Env {
 public:
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    if (!store().dirs.count(parent_of(path)))
      throw NotFoundError("cannot create 'memory://" + path + "': no such directory");
    auto data = std::make_shared<std::string>();
    store().files[path] = data;
    return std::make_unique<MemoryWritableFile>(path, data);
  }
  std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    auto it = store().files.find(path);
    if (it == store().files.end())
      throw NotFoundError("cannot open 'memory://" + path + "': no such file");
    return std::make_unique<MemoryRandomAccessFile>(path, it->second);
  }
  bool file_exists(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    return store().files.count(path) > 0;
  }
  bool dir_exists(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    return store().dirs.count(path) > 0;
  }
  void create_dirs(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    for (std::string p = path; !p.empty(); p = parent_of(p)) store().dirs.insert(p);
    store().dirs.insert("");
  }
  void rename_file(const std::string& from, const std::string& to) override {
    std::lock_guard<std::mutex> lock(store().mu);
    auto it = store().files.find(from);
    if (it == store().files.end())
      throw NotFoundError("cannot rename 'memory://" + from + "': no such file");
    store().files[to] = it->second;
    store().files.erase(from);
  }
  void remove_file(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    store().files.erase(path);
  }
  void sync_dir(const std::string&) override {}
  std::vector<std::string> list_dir(const std::string& path) override {
    std::lock_guard<std::mutex> lock(store().mu);
    if (!store().dirs.count(path))
      throw NotFoundError("cannot list 'memory://" + path + "': no such directory");
    std::vector<std::string> names;
    const std::string prefix = path.empty() ? "" : path + "/";
    for (const auto& kv : store().files)
      if (kv.first.compare(0, prefix.size(), prefix) == 0 &&
          kv.first.find('/', prefix.size()) == std::string::npos)
        names.push_back(kv.first.substr(prefix.size()));
    return names;
  }
};

std::string strip_memory_scheme(const std::string& id) {
  const std::string scheme = "memory://";
  return id.compare(0, scheme.size(), scheme) == 0 ? id.substr(scheme.size()) : id;
}

}  // namespace

Env* internal::memory_env() {
  static MemoryEnv env;
  return &env;
}

std::vector<std::string> memory_checkpoint_files(const std::string& checkpoint_id) {
  return memory_env()->list_dir(strip_memory_scheme(checkpoint_id));
}

std::string& memory_checkpoint_file(const std::string& checkpoint_id, const std::string& name) {
  std::lock_guard<std::mutex> lock(store().mu);
  const std::string path = join_path(strip_memory_scheme(checkpoint_id), name);
  auto it = store().files.find(path);
  if (it == store().files.end()) throw NotFoundError("no in-memory file 'memory://" + path + "'");
  return *it->second;
}

void clear_memory_checkpoints(const std::string& prefix) {
  const std::string p = strip_memory_scheme(prefix);
  std::lock_guard<std::mutex> lock(store().mu);
  for (auto it = store().files.begin(); it != store().files.end();)
    it = it->first.compare(0, p.size(), p) == 0 ? store().files.erase(it) : std::next(it);
  for (auto it = store().dirs.begin(); it != store().dirs.end();)
    it =
        (!it->empty() && it->compare(0, p.size(), p) == 0) ? store().dirs.erase(it) : std::next(it);
}

}  // namespace dcp
