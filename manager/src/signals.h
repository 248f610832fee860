// The preemption signals of the CheckpointManager (signals.cpp).
#pragma once

#include <csignal>
#include <vector>

namespace dcp {
namespace manager {
namespace internal {

// The last signal received while handlers are installed; 0 for none.
extern volatile std::sig_atomic_t g_signal;

// Installs handlers for `signals` (the first install of nested ones) and
// clears g_signal; restore_signals() undoes the last one.
void install_signals(const std::vector<int>& signals);
void restore_signals();

}  // namespace internal
}  // namespace manager
}  // namespace dcp
