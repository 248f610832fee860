// One data file of a save: its items appended (FileAppender), then made
// durable (FileAppender::finish, or PendingSyncs on threads of their own).
// Used by the file-system writer (filesystem_writer.cpp).
#pragma once

#include <algorithm>
#include <cstring>
#include <exception>
#include <future>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "buffer_pool.h"
#include "dcp/filesystem.h"
#include "env.h"
#include "staged_checksums.h"
#include "xxh3.h"

namespace dcp {
namespace internal {
namespace fs {

constexpr size_t kAlign = 64;                    // every item starts at a multiple of this
constexpr size_t kPieceBytes = size_t{4} << 20;  // hash-then-write granularity of large items
constexpr uint64_t kWritebackBytes = uint64_t{4} << 20;

// Writes a sequence of items into one file: small items through a reused
// buffer, large ones straight from their memory in pieces that are hashed
// just before they are written.
class FileAppender {
 public:
  FileAppender(std::unique_ptr<WritableFile> file, const FileSystemWriterOptions& opt,
               bool need_buffer)
      : file_(std::move(file)), opt_(opt) {
    if (need_buffer) buf_ = BufferPool::instance().acquire(opt.buffer_bytes);
  }

  // Pads to the next multiple of kAlign, where the next item starts; returns that offset.
  uint64_t begin_item() {
    static const char zeros[kAlign] = {};
    const size_t pad = static_cast<size_t>(-offset_ & (kAlign - 1));
    if (pad) emit(zeros, pad, true);
    return offset_;
  }

  // Appends bytes of an item: small ones through the buffer, large ones
  // straight from `data`.
  void write(const void* data, size_t n) { emit(data, n, n < opt_.coalesce_below_bytes); }

  // Appends one item; returns its offset and checksum.
  std::pair<uint64_t, uint64_t> add(const void* data, size_t n) {
    const uint64_t start = begin_item();
    uint64_t checksum = 0;
    // Taken by the stager as it copied (async saves): not read again.
    const bool staged = opt_.checksums && n > 0 && staged_checksum(data, n, &checksum);
    if (n < opt_.coalesce_below_bytes && buf_) {
      if (opt_.checksums && !staged) checksum = xxh3_64(data, n);
      emit(data, n, true);
    } else {
      flush();
      if (opt_.checksums && !staged) {
        Xxh3 state;
        const char* p = static_cast<const char*>(data);
        for (size_t done = 0; done < n; done += kPieceBytes) {
          const size_t len = std::min(kPieceBytes, n - done);
          state.update(p + done, len);
          append_direct(p + done, len);
        }
        checksum = n ? state.digest() : xxh3_64(data, 0);
      } else {
        append_direct(data, n);
      }
    }
    return {start, checksum};
  }

  void finish() {
    flush();
    if (opt_.sync_files) file_->sync();
    file_->close();
  }

  // The file with every byte appended, to be synced and closed elsewhere.
  std::unique_ptr<WritableFile> release() {
    flush();
    return std::move(file_);
  }

 private:
  void emit(const void* data, size_t n, bool buffered) {
    if (n == 0) return;  // an empty tensor's data may be null (memcpy of null is undefined)
    if (buffered && buf_ && n <= buf_.size()) {
      if (used_ + n > buf_.size()) flush();
      std::memcpy(buf_.data() + used_, data, n);
      used_ += n;
      offset_ += n;
    } else {
      flush();
      append_direct(data, n);
    }
  }
  void append_direct(const void* data, size_t n) {
    file_->append(data, n);
    offset_ += n;
    written_since_hint_ += n;
    if (opt_.sync_files && written_since_hint_ >= kWritebackBytes) {
      file_->start_writeback();
      written_since_hint_ = 0;
    }
  }
  void flush() {
    if (used_ == 0) return;
    const size_t n = used_;
    used_ = 0;
    offset_ -= n;  // append_direct counts them again
    append_direct(buf_.data(), n);
  }

  std::unique_ptr<WritableFile> file_;
  const FileSystemWriterOptions& opt_;
  BufferPool::Buffer buf_;
  size_t used_ = 0;
  uint64_t offset_ = 0;
  uint64_t written_since_hint_ = 0;
};

// Data files being made durable (fdatasync, then close) on threads of their
// own, while the coordinator gathers the results and builds the metadata.
// wait() joins them and throws the first failure; discard() joins them and
// drops failures (the save they belong to has failed already).
class PendingSyncs {
 public:
  PendingSyncs() = default;
  PendingSyncs(const PendingSyncs&) = delete;
  PendingSyncs& operator=(const PendingSyncs&) = delete;
  ~PendingSyncs() { discard(); }

  void start(std::unique_ptr<WritableFile> file) {
    std::shared_ptr<WritableFile> f(std::move(file));
    auto sync = [f] {
      f->sync();
      f->close();
    };
    try {
      // (The thread inherits the caller's CPU and I/O priority: an async
      // save's background thread makes it.)
      syncs_.push_back(std::async(std::launch::async, sync));
    } catch (const std::system_error&) {  // no thread to be had: here, now
      sync();
    }
  }

  void wait() {
    std::exception_ptr first;
    for (auto& s : syncs_) {
      try {
        s.get();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    syncs_.clear();
    if (first) std::rethrow_exception(first);
  }

  void discard() noexcept {
    try {
      wait();
    } catch (...) {
    }
  }

 private:
  std::vector<std::future<void>> syncs_;
};

}  // namespace fs
}  // namespace internal
}  // namespace dcp
