// Compiles cleanly under clang -Wthread-safety -Werror (thread_safety_test.sh).
#include "dcp/thread_annotations.h"

struct Counter {
  dcp::Mutex mu;
  dcp::CondVar cv;
  int n DCP_GUARDED_BY(mu) = 0;

  void add() {
    dcp::MutexLock lock(mu);
    ++n;
    cv.notify_all();
  }
  int wait_for_positive() {
    dcp::MutexLock lock(mu);
    while (n <= 0) cv.wait(mu);
    return n;
  }
  int add_locked() DCP_REQUIRES(mu) { return ++n; }
  int twice() {
    dcp::MutexLock lock(mu);
    add_locked();
    lock.unlock();
    lock.lock();
    return add_locked();
  }
};

int main() {
  Counter c;
  c.add();
  return c.wait_for_positive() + c.twice() > 0 ? 0 : 1;
}
