// Large byte buffers reused across saves and loads. Fresh memory costs a page
// fault per 4 KiB on first touch (~0.25 GB/s on small machines), which would
// dominate the I/O of small items; a warm buffer costs nothing.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "dcp/thread_annotations.h"

namespace dcp {
namespace internal {

class BufferPool {
 public:
  class Buffer {
   public:
    Buffer() = default;
    Buffer(BufferPool* pool, std::unique_ptr<char[]> data, size_t size)
        : pool_(pool), data_(std::move(data)), size_(size) {}
    Buffer(Buffer&&) = default;
    Buffer& operator=(Buffer&&) = default;
    ~Buffer() {
      if (pool_ && data_) pool_->release(std::move(data_), size_);
    }
    char* data() const { return data_.get(); }
    size_t size() const { return size_; }
    explicit operator bool() const { return data_ != nullptr; }

   private:
    BufferPool* pool_ = nullptr;
    std::unique_ptr<char[]> data_;
    size_t size_ = 0;
  };

  // The process-wide pool.
  static BufferPool& instance();

  Buffer acquire(size_t size);

 private:
  void release(std::unique_ptr<char[]> data, size_t size);

  static constexpr size_t kMaxPerSize = 8;
  Mutex mu_;
  std::map<size_t, std::vector<std::unique_ptr<char[]>>> free_ DCP_GUARDED_BY(mu_);
};

}  // namespace internal
}  // namespace dcp
