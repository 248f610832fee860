#include "buffer_pool.h"

namespace dcp {
namespace internal {

BufferPool& BufferPool::instance() {
  static BufferPool* pool = new BufferPool();  // never destroyed: safe at exit
  return *pool;
}

BufferPool::Buffer BufferPool::acquire(size_t size) {
  {
    MutexLock lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      auto data = std::move(it->second.back());
      it->second.pop_back();
      return Buffer(this, std::move(data), size);
    }
  }
  return Buffer(this, std::unique_ptr<char[]>(new char[size]), size);
}

void BufferPool::release(std::unique_ptr<char[]> data, size_t size) {
  MutexLock lock(mu_);
  auto& list = free_[size];
  if (list.size() < kMaxPerSize) list.push_back(std::move(data));
}

}  // namespace internal
}  // namespace dcp
