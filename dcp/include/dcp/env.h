// Env: every file operation dcp++ does, behind one interface (leveldb's
// include/leveldb/env.h). The file-system storage writer and reader
// (dcp/filesystem.h) and the CheckpointManager run on an Env, so the same
// code runs on POSIX files (posix_env()) and on the process-wide in-memory
// store (memory_env(), what "memory://" checkpoint ids use). Subclass
// EnvWrapper to observe or change some calls (fault injection, timing) and
// forward the rest.
//
// Paths are the Env's own: a POSIX path for posix_env(), the id without its
// "memory://" scheme for memory_env() (env_path() below). Every method
// throws a dcp::Error naming the path: NotFoundError when the file or
// directory does not exist, else a StorageError carrying the errno
// (StorageError::error_number(); the memory env sets the errno POSIX would).
// Every method may be called from several threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dcp/export.h"

namespace dcp {

class DCP_CORE_EXPORT WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual void append(const void* data, size_t n) = 0;
  // Starts write-back of what was appended so far without waiting for it,
  // so that a later sync() has less to do. A hint: may do nothing.
  virtual void start_writeback() {}
  // Makes the appended data durable (fdatasync).
  virtual void sync() = 0;
  virtual void close() = 0;
  virtual uint64_t size() const = 0;
  virtual const std::string& path() const = 0;
};

// One destination of RandomAccessFile::read_vectored().
struct DCP_CORE_EXPORT ReadSlice {
  void* dst;
  size_t n;
};

class DCP_CORE_EXPORT RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to n bytes at `offset` into dst; returns the bytes read (fewer
  // only at the end of the file). Thread-safe.
  virtual size_t read(uint64_t offset, size_t n, void* dst) const = 0;
  // Reads consecutive bytes from `offset` into the slices in turn, as read()
  // of their total would; returns the bytes read (fewer only at the end of
  // the file). Thread-safe. The default calls read() for each slice until
  // one comes back short; the POSIX file reads them with preadv, so that
  // many small items go straight into their tensors in one call.
  virtual size_t read_vectored(uint64_t offset, const ReadSlice* slices, size_t count) const;
  virtual uint64_t size() const = 0;
  virtual const std::string& path() const = 0;
};

// An exclusive advisory lock on a file (Env::lock_file); destroying the
// handle releases it.
class DCP_CORE_EXPORT FileLock {
 public:
  virtual ~FileLock() = default;
  virtual const std::string& path() const = 0;
};

class DCP_CORE_EXPORT Env {
 public:
  virtual ~Env() = default;

  // Creates (or truncates) a file for writing; its directory must exist.
  virtual std::unique_ptr<WritableFile> new_writable_file(const std::string& path) = 0;
  // Like new_writable_file(), for large sequential writes that need not go
  // through the page cache. POSIX: O_DIRECT, the appended bytes gathered
  // into 4 KiB-aligned blocks (memory that is 4 KiB-aligned at a block
  // boundary of the file is written from where it is, the rest through an
  // aligned buffer), the unaligned tail written without O_DIRECT when the
  // file is synced or closed; when the file system refuses O_DIRECT (EINVAL,
  // at open or at a write) the file carries on as a plain one. The bytes in
  // the file are the same either way. Default (and every EnvWrapper, whose
  // new_writable_file() then sees the call): new_writable_file().
  virtual std::unique_ptr<WritableFile> new_direct_writable_file(const std::string& path) {
    return new_writable_file(path);
  }
  virtual std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& path) = 0;
  // True for a regular file (POSIX: following symlinks).
  virtual bool file_exists(const std::string& path) = 0;
  virtual bool dir_exists(const std::string& path) = 0;
  // Creates the directory and its parents; fine if it exists. A StorageError
  // when the path or one of its parents is not a directory.
  virtual void create_dirs(const std::string& path) = 0;
  // Atomically renames a file or a directory; a file `to` is replaced, as is
  // an empty directory `to` (a non-empty one is an error, ENOTEMPTY).
  virtual void rename_file(const std::string& from, const std::string& to) = 0;
  // Removes a file; fine if it does not exist.
  virtual void remove_file(const std::string& path) = 0;
  // Removes a directory and everything under it (or a file); fine if it
  // does not exist. Symlinks are removed, not followed.
  virtual void remove_dir_recursively(const std::string& path) = 0;
  // The names in a directory (files and directories; no "." or ".."), in no
  // particular order. NotFoundError when it does not exist (a dangling
  // symlink included); a StorageError naming the path and the errno text
  // when it cannot be listed (not a directory, no permission).
  virtual std::vector<std::string> list_dir(const std::string& path) = 0;
  // Makes the directory's entries (creations, renames, removals) durable.
  virtual void sync_dir(const std::string& path) = 0;
  // Takes an exclusive advisory lock on `path` (POSIX: flock on the file,
  // created when missing; its content is untouched), without waiting:
  // nullptr when another holder has it, another handle of this process
  // included. Released when the handle is destroyed (or the process exits).
  virtual std::unique_ptr<FileLock> lock_file(const std::string& path) = 0;

  // Helpers over the calls above (not virtual: an EnvWrapper sees the calls
  // they make).
  // The whole file (new_random_access_file).
  std::string read_file(const std::string& path);
  // Creates or replaces `path` with `data` (new_writable_file); with `sync`,
  // the data is durable when it returns (not the directory entry: sync_dir).
  void write_file(const std::string& path, const std::string& data, bool sync);
  // create_dirs(), then (with `sync`) the parent of each directory it created
  // is synced (sync_dir), so the new directories survive a power cut.
  void create_dirs_durably(const std::string& path, bool sync = true);
};

// Forwards every call to `target` (not owned; it must outlive the wrapper).
// Subclass it and override the calls to observe or change.
class DCP_CORE_EXPORT EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target);
  Env* target() const { return target_; }

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

 private:
  Env* target_;
};

// POSIX files. Process-wide, never destroyed.
DCP_CORE_EXPORT Env* posix_env();
// The process-wide in-memory store of "memory://" checkpoints: files and
// directories in a map, sync a no-op, contents gone at exit.
DCP_CORE_EXPORT Env* memory_env();

// The Env a checkpoint id (or directory) names by its scheme: memory_env()
// for "memory://...", posix_env() for everything else.
DCP_CORE_EXPORT Env* env_for(const std::string& id);
// The path inside that Env: the id without a "memory://" scheme.
DCP_CORE_EXPORT std::string env_path(const std::string& id);

}  // namespace dcp
