// Thread-safety annotations checked by clang's -Wthread-safety (as leveldb's
// port/thread_annotations.h and abseil's), and the small annotated mutex,
// scoped lock and condition variable dcp++'s shared state uses. GCC and
// other compilers ignore the annotations; the types then behave exactly like
// std::mutex, std::lock_guard / std::unique_lock and std::condition_variable.
//
// A member written `T x_ DCP_GUARDED_BY(mu_);` may be read or written only
// with mu_ held: clang reports every access without it, and every function
// marked DCP_REQUIRES(mu_) called without it. The sanitizer build
// (scripts/test.sh --sanitize address) makes these findings errors.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define DCP_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define DCP_THREAD_ANNOTATION(x)
#endif

#define DCP_CAPABILITY(x) DCP_THREAD_ANNOTATION(capability(x))
#define DCP_SCOPED_CAPABILITY DCP_THREAD_ANNOTATION(scoped_lockable)
#define DCP_GUARDED_BY(x) DCP_THREAD_ANNOTATION(guarded_by(x))
#define DCP_PT_GUARDED_BY(x) DCP_THREAD_ANNOTATION(pt_guarded_by(x))
#define DCP_ACQUIRED_AFTER(...) DCP_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define DCP_ACQUIRED_BEFORE(...) DCP_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define DCP_REQUIRES(...) DCP_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define DCP_ACQUIRE(...) DCP_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define DCP_RELEASE(...) DCP_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define DCP_TRY_ACQUIRE(...) DCP_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define DCP_EXCLUDES(...) DCP_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define DCP_ASSERT_CAPABILITY(x) DCP_THREAD_ANNOTATION(assert_capability(x))
#define DCP_RETURN_CAPABILITY(x) DCP_THREAD_ANNOTATION(lock_returned(x))
#define DCP_NO_THREAD_SAFETY_ANALYSIS DCP_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace dcp {

// std::mutex as a capability clang can track.
class DCP_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() DCP_ACQUIRE() { mu_.lock(); }
  void unlock() DCP_RELEASE() { mu_.unlock(); }
  bool try_lock() DCP_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis that the caller holds this mutex (no check at run time).
  void assert_held() const DCP_ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope (std::lock_guard); unlock() and lock() let a
// scope give it up for a while (std::unique_lock), and the destructor
// releases it only when held.
class DCP_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) DCP_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() DCP_RELEASE() {
    if (held_) mu_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() DCP_RELEASE() {
    mu_.unlock();
    held_ = false;
  }
  void lock() DCP_ACQUIRE() {
    mu_.lock();
    held_ = true;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

// std::condition_variable on a Mutex the caller holds.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void wait(Mutex& mu) DCP_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // Returns false when `deadline` passed first.
  bool wait_until(Mutex& mu, std::chrono::steady_clock::time_point deadline) DCP_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    const bool notified = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return notified;
  }
  template <class Rep, class Period>
  bool wait_for(Mutex& mu, std::chrono::duration<Rep, Period> timeout) DCP_REQUIRES(mu) {
    return wait_until(mu,
                      std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
  }
  void notify_one() { cv_.notify_one(); }
  void notify_all() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace dcp
