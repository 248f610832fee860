// Appending to <dir>/dcp_manager.stats (dcp/manager/stats.h).
#pragma once

#include <chrono>
#include <string>

#include "dcp/env.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace internal {

// Seconds since the epoch at the steady-clock time `t` (in the past).
double wall_time_at(std::chrono::steady_clock::time_point t);

// The line of `st` in the stats file (with its newline).
std::string stats_line(const SaveStatistics& st);

// Appends the line of `st` to <dir>/dcp_manager.stats. On POSIX files
// (`env` or what it wraps is posix_env()): one write(2) with O_APPEND, not
// through `env`, so an EnvWrapper (fault injection) never sees it. Other
// Envs (memory_env()): nothing is kept. Never throws: a failure is logged.
void append_save_statistics(Env* env, const std::string& dir, const SaveStatistics& st) noexcept;

}  // namespace internal
}  // namespace manager
}  // namespace dcp
