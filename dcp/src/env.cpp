// What every Env shares: the helpers over its calls, EnvWrapper, and the Env
// a checkpoint id's scheme names (dcp/env.h).
#include "env.h"

#include "dcp/error.h"

namespace dcp {

namespace {
constexpr const char kMemoryScheme[] = "memory://";
constexpr size_t kMemorySchemeSize = sizeof(kMemoryScheme) - 1;

bool is_memory_id(const std::string& id) {
  return id.compare(0, kMemorySchemeSize, kMemoryScheme) == 0;
}
}  // namespace

size_t RandomAccessFile::read_vectored(uint64_t offset, const ReadSlice* slices,
                                       size_t count) const {
  size_t done = 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t got = slices[i].n ? read(offset + done, slices[i].n, slices[i].dst) : 0;
    done += got;
    if (got < slices[i].n) break;
  }
  return done;
}

std::string Env::read_file(const std::string& path) {
  auto f = new_random_access_file(path);
  std::string s(f->size(), '\0');
  s.resize(f->read(0, s.size(), s.data()));
  return s;
}

void Env::write_file(const std::string& path, const std::string& data, bool sync) {
  auto f = new_writable_file(path);
  f->append(data.data(), data.size());
  if (sync) f->sync();
  f->close();
}

void Env::create_dirs_durably(const std::string& path, bool sync) {
  std::vector<std::string> missing;
  if (sync)
    for (std::string p = path; !p.empty() && p != "/" && p != "." && !dir_exists(p);
         p = internal::parent_path(p))
      missing.push_back(p);
  create_dirs(path);
  for (const auto& m : missing) sync_dir(internal::parent_path(m));
}

std::string internal::parent_path(const std::string& p) {
  const auto last = p.find_last_not_of('/');
  const auto slash = last == std::string::npos ? std::string::npos : p.rfind('/', last);
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string internal::join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

Env* env_for(const std::string& id) { return is_memory_id(id) ? memory_env() : posix_env(); }

std::string env_path(const std::string& id) {
  return is_memory_id(id) ? id.substr(kMemorySchemeSize) : id;
}

EnvWrapper::EnvWrapper(Env* target) : target_(target) {
  if (!target_) throw InvalidArgumentError("EnvWrapper needs an Env to forward to");
}
std::unique_ptr<WritableFile> EnvWrapper::new_writable_file(const std::string& path) {
  return target_->new_writable_file(path);
}
std::unique_ptr<RandomAccessFile> EnvWrapper::new_random_access_file(const std::string& path) {
  return target_->new_random_access_file(path);
}
bool EnvWrapper::file_exists(const std::string& path) { return target_->file_exists(path); }
bool EnvWrapper::dir_exists(const std::string& path) { return target_->dir_exists(path); }
void EnvWrapper::create_dirs(const std::string& path) { target_->create_dirs(path); }
void EnvWrapper::rename_file(const std::string& from, const std::string& to) {
  target_->rename_file(from, to);
}
void EnvWrapper::remove_file(const std::string& path) { target_->remove_file(path); }
void EnvWrapper::remove_dir_recursively(const std::string& path) {
  target_->remove_dir_recursively(path);
}
std::vector<std::string> EnvWrapper::list_dir(const std::string& path) {
  return target_->list_dir(path);
}
void EnvWrapper::sync_dir(const std::string& path) { target_->sync_dir(path); }
std::unique_ptr<FileLock> EnvWrapper::lock_file(const std::string& path) {
  return target_->lock_file(path);
}

}  // namespace dcp
