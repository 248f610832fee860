// posix_env(): the Env of POSIX files (dcp/env.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "dcp/error.h"
#include "dcp/thread_annotations.h"
#include "env.h"

namespace dcp {

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void append(const void* data, size_t n) override {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw_errno("cannot write to", path_, errno);
      }
      p += w;
      n -= static_cast<size_t>(w);
      size_ += static_cast<uint64_t>(w);
    }
  }
  void start_writeback() override {
    // Begin write-back of everything not yet submitted; do not wait.
    if (size_ > submitted_) {
      ::sync_file_range(fd_, static_cast<off_t>(submitted_), static_cast<off_t>(size_ - submitted_),
                        SYNC_FILE_RANGE_WRITE);
      submitted_ = size_;
    }
  }
  void sync() override {
    if (::fdatasync(fd_) != 0) throw_errno("cannot fdatasync", path_, errno);
  }
  void close() override {
    if (fd_ >= 0) {
      int fd = fd_;
      fd_ = -1;
      if (::close(fd) != 0) throw_errno("cannot close", path_, errno);
    }
  }
  uint64_t size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
  uint64_t size_ = 0;
  uint64_t submitted_ = 0;
};

// Aligned buffers of PosixDirectWritableFile, kept for the next file (fresh
// memory costs a page fault per 4 KiB).
constexpr size_t kDirectBlock = 4096;
constexpr size_t kDirectBufferBytes = size_t{8} << 20;

class DirectBufferPool {
 public:
  static DirectBufferPool& instance() {
    static DirectBufferPool* pool = new DirectBufferPool();  // never destroyed: safe at exit
    return *pool;
  }
  char* acquire() {
    {
      MutexLock lock(mu_);
      if (!free_.empty()) {
        char* p = free_.back();
        free_.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    if (::posix_memalign(&p, kDirectBlock, kDirectBufferBytes) != 0) throw std::bad_alloc();
    return static_cast<char*>(p);
  }
  void release(char* p) {
    MutexLock lock(mu_);
    if (free_.size() < kMaxKept)
      free_.push_back(p);
    else
      std::free(p);
  }

 private:
  static constexpr size_t kMaxKept = 4;
  Mutex mu_;
  std::vector<char*> free_ DCP_GUARDED_BY(mu_);
};

// Writes with O_DIRECT (Env::new_direct_writable_file). Invariant while
// direct_: the bytes written to the file are a multiple of kDirectBlock;
// the appended bytes after them wait in buf_.
class PosixDirectWritableFile final : public WritableFile {
 public:
  PosixDirectWritableFile(std::string path, int fd, bool direct, bool refuse_write)
      : path_(std::move(path)), fd_(fd), direct_(direct), refuse_write_(refuse_write) {}
  ~PosixDirectWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
    if (buf_) DirectBufferPool::instance().release(buf_);
  }
  void append(const void* data, size_t n) override {
    const char* p = static_cast<const char*>(data);
    size_ += n;
    while (n > 0) {
      if (!direct_) {
        write_out(p, n);
        return;
      }
      if (used_ == 0 && n >= kDirectBlock && reinterpret_cast<uintptr_t>(p) % kDirectBlock == 0) {
        // Aligned memory at a block boundary of the file: written from where it is.
        const size_t k = n / kDirectBlock * kDirectBlock;
        write_out(p, k);
        p += k;
        n -= k;
        continue;
      }
      if (!buf_) buf_ = DirectBufferPool::instance().acquire();
      const size_t k = std::min(n, kDirectBufferBytes - used_);
      std::memcpy(buf_ + used_, p, k);
      used_ += k;
      p += k;
      n -= k;
      if (used_ == kDirectBufferBytes) {
        used_ = 0;
        write_out(buf_, kDirectBufferBytes);
      }
    }
  }
  void start_writeback() override {
    if (direct_) return;  // nothing waits in the page cache
    const uint64_t written = size_ - used_;
    if (written > submitted_) {
      ::sync_file_range(fd_, static_cast<off_t>(submitted_),
                        static_cast<off_t>(written - submitted_), SYNC_FILE_RANGE_WRITE);
      submitted_ = written;
    }
  }
  void sync() override {
    flush_tail();
    if (::fdatasync(fd_) != 0) throw_errno("cannot fdatasync", path_, errno);
  }
  void close() override {
    if (fd_ < 0) return;
    flush_tail();
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw_errno("cannot close", path_, errno);
  }
  uint64_t size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  // The buffered bytes: whole blocks with O_DIRECT, the rest without (the
  // file is a plain one from then on).
  void flush_tail() {
    if (used_ == 0) return;
    const size_t n = used_;
    used_ = 0;
    const size_t aligned = n / kDirectBlock * kDirectBlock;
    if (direct_ && aligned) write_out(buf_, aligned);
    if (aligned < n) {
      leave_direct();
      write_out(buf_ + aligned, n - aligned);
    }
  }
  // Stops using O_DIRECT on this file.
  void leave_direct() {
    if (!direct_) return;
    direct_ = false;
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0)
      throw_errno("cannot turn off O_DIRECT on", path_, errno);
  }
  void write_out(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w;
      if (refuse_write_ && direct_) {
        w = -1;
        errno = EINVAL;
      } else {
        w = ::write(fd_, p, n);
      }
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL && direct_) {
          // The file system wants another alignment, or no O_DIRECT at all.
          leave_direct();
          continue;
        }
        throw_errno("cannot write to", path_, errno);
      }
      p += w;
      n -= static_cast<size_t>(w);
      // A short write may leave the file off a block boundary: the next
      // O_DIRECT write then fails with EINVAL and the file carries on without.
    }
  }

  std::string path_;
  int fd_;
  bool direct_;
  const bool refuse_write_;  // tests: the first O_DIRECT write fails with EINVAL
  char* buf_ = nullptr;
  size_t used_ = 0;    // bytes waiting in buf_
  uint64_t size_ = 0;  // bytes appended
  uint64_t submitted_ = 0;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }
  size_t read(uint64_t offset, size_t n, void* dst) const override {
    char* p = static_cast<char*>(dst);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno("cannot read", path_, errno);
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    return done;
  }
  size_t read_vectored(uint64_t offset, const ReadSlice* slices, size_t count) const override {
    // preadv takes at most IOV_MAX slices; a short read resumes mid-slice.
    iovec iov[kMaxSlices];
    size_t done = 0, i = 0, skip = 0;  // slice i, of which `skip` bytes are read
    while (i < count) {
      size_t k = 0;
      for (size_t j = i; j < count && k < kMaxSlices; ++j) {
        const size_t off = j == i ? skip : 0;
        if (slices[j].n == off) continue;
        iov[k].iov_base = static_cast<char*>(slices[j].dst) + off;
        iov[k].iov_len = slices[j].n - off;
        ++k;
      }
      if (k == 0) break;
      ssize_t r = ::preadv(fd_, iov, static_cast<int>(k), static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno("cannot read", path_, errno);
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
      // Advance past what was read.
      for (size_t left = static_cast<size_t>(r); i < count && left > 0;) {
        const size_t rest = slices[i].n - skip;
        if (left >= rest) {
          left -= rest;
          ++i;
          skip = 0;
        } else {
          skip += left;
          left = 0;
        }
      }
    }
    return done;
  }
  uint64_t size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  static constexpr size_t kMaxSlices = 1024;  // IOV_MAX on Linux
  std::string path_;
  int fd_;
  uint64_t size_;
};

class PosixFileLock final : public FileLock {
 public:
  PosixFileLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  std::unique_ptr<WritableFile> new_writable_file(const std::string& path) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw_errno("cannot create", path, errno);
    return std::make_unique<PosixWritableFile>(path, fd);
  }
  std::unique_ptr<WritableFile> new_direct_writable_file(const std::string& path) override {
    // Tests only: $DCP_TEST_DIRECT_IO_REFUSE=open or =write plays a file
    // system that refuses O_DIRECT at open, or at the first write.
    const char* refuse = std::getenv("DCP_TEST_DIRECT_IO_REFUSE");
    const bool refuse_open = refuse && std::strcmp(refuse, "open") == 0;
    const bool refuse_write = refuse && std::strcmp(refuse, "write") == 0;
    int fd = -1;
    if (refuse_open)
      errno = EINVAL;
    else
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    bool direct = true;
    if (fd < 0 && errno == EINVAL) {  // the file system has no O_DIRECT (tmpfs before 6.6)
      direct = false;
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd < 0) throw_errno("cannot create", path, errno);
    return std::make_unique<PosixDirectWritableFile>(path, fd, direct, refuse_write);
  }
  std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open", path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      throw_errno("cannot stat", path, err);
    }
    return std::make_unique<PosixRandomAccessFile>(path, fd, static_cast<uint64_t>(st.st_size));
  }
  bool file_exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  }
  bool dir_exists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }
  void create_dirs(const std::string& path) override {
    if (path.empty() || dir_exists(path)) return;
    auto slash = path.find_last_of('/', path.size() > 1 ? path.size() - 2 : 0);
    if (slash != std::string::npos && slash > 0) create_dirs(path.substr(0, slash));
    if (::mkdir(path.c_str(), 0755) != 0 && (errno != EEXIST || !dir_exists(path)))
      throw_errno("cannot create directory", path, errno);
  }
  void rename_file(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      throw_errno("cannot rename to '" + to + "' from", from, errno);
  }
  void remove_file(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", path, errno);
  }
  void sync_dir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno("cannot open directory", path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) throw_errno("cannot fsync directory", path, err);
  }
  void remove_dir_recursively(const std::string& path) override {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) throw_errno("cannot remove", path, ec.value());
  }
  std::vector<std::string> list_dir(const std::string& path) override {
    DIR* d = ::opendir(path.c_str());
    if (!d) throw_errno("cannot list directory", path, errno);
    std::vector<std::string> names;
    for (;;) {
      errno = 0;
      struct dirent* e = ::readdir(d);
      if (!e) break;
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) throw_errno("cannot list directory", path, err);
    return names;
  }
  std::unique_ptr<FileLock> lock_file(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw_errno("cannot open lock file", path, errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) return nullptr;
      throw_errno("cannot lock", path, err);
    }
    return std::make_unique<PosixFileLock>(path, fd);
  }
};

}  // namespace

Env* posix_env() {
  static PosixEnv env;
  return &env;
}

}  // namespace dcp
