// Each function breaks one rule; thread_safety_test.sh expects clang
// -Wthread-safety to report every line marked "expected".
#include "dcp/thread_annotations.h"

struct Counter {
  dcp::Mutex mu;
  int n DCP_GUARDED_BY(mu) = 0;
  int add_locked() DCP_REQUIRES(mu) { return ++n; }
};

int read_unlocked(Counter& c) { return c.n; }             // expected: reading n without mu
void write_unlocked(Counter& c) { c.n = 1; }              // expected: writing n without mu
int call_unlocked(Counter& c) { return c.add_locked(); }  // expected: calling without mu
int after_unlock(Counter& c) {
  dcp::MutexLock lock(c.mu);
  lock.unlock();
  return c.n;  // expected: reading n after unlock
}
void std_lock_guard_is_not_enough(Counter& c) {
  std::lock_guard<dcp::Mutex> lock(c.mu);  // not a scoped capability: the analysis
  c.n = 2;                                 // expected: ... does not see mu held
}

int main() { return 0; }
