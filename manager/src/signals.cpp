// The preemption signals: handlers that only record the signal, installed
// while a CheckpointManager with save.on_signals is open (nested managers
// share one installation), the previous handlers restored when the last
// closes.
#include "signals.h"

#include <map>
#include <mutex>

#include "dcp/thread_annotations.h"

namespace dcp {
namespace manager {
namespace internal {

volatile std::sig_atomic_t g_signal = 0;

namespace {
void on_signal(int signo) { g_signal = signo; }  // async-signal-safe: one store

struct SavedHandlers {
  Mutex mu;
  int installs DCP_GUARDED_BY(mu) = 0;
  std::map<int, struct sigaction> previous DCP_GUARDED_BY(mu);
};
SavedHandlers& handlers() {
  static SavedHandlers* h = new SavedHandlers();
  return *h;
}

}  // namespace

void install_signals(const std::vector<int>& signals) {
  SavedHandlers& h = handlers();
  MutexLock lock(h.mu);
  if (h.installs++ > 0) return;
  g_signal = 0;  // a signal that a closed manager acted on is not this one's
  for (int s : signals) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    struct sigaction old {};
    if (::sigaction(s, &sa, &old) == 0) h.previous[s] = old;
  }
}

void restore_signals() {
  SavedHandlers& h = handlers();
  MutexLock lock(h.mu);
  if (--h.installs > 0) return;
  for (auto& [s, old] : h.previous) ::sigaction(s, &old, nullptr);
  h.previous.clear();
}

}  // namespace internal
}  // namespace manager
}  // namespace dcp
