// The file operations the file-system backend needs, behind an interface
// (leveldb's Env), so the same writer and reader run on POSIX files and on
// the in-memory store. Every method throws dcp::Error naming the path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dcp {
namespace internal {

class WritableFile {
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

class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to n bytes at `offset` into dst; returns the bytes read (fewer
  // only at the end of the file). Thread-safe.
  virtual size_t read(uint64_t offset, size_t n, void* dst) const = 0;
  virtual uint64_t size() const = 0;
  virtual const std::string& path() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  // Creates (or truncates) a file for writing.
  virtual std::unique_ptr<WritableFile> new_writable_file(const std::string& path) = 0;
  virtual std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& path) = 0;
  // The whole file (through new_random_access_file).
  std::string read_file(const std::string& path);
  virtual bool file_exists(const std::string& path) = 0;
  virtual bool dir_exists(const std::string& path) = 0;
  // Creates the directory and its parents; fine if it exists.
  virtual void create_dirs(const std::string& path) = 0;
  // Atomically replaces `to` with `from`.
  virtual void rename_file(const std::string& from, const std::string& to) = 0;
  // Removes a file; fine if it does not exist.
  virtual void remove_file(const std::string& path) = 0;
  // Makes the directory's entries (creations, renames, removals) durable.
  virtual void sync_dir(const std::string& path) = 0;
  virtual std::vector<std::string> list_dir(const std::string& path) = 0;
};

Env* posix_env();
Env* memory_env();

std::string join_path(const std::string& dir, const std::string& name);

}  // namespace internal
}  // namespace dcp
