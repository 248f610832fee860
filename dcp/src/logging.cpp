#include "dcp/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "dcp/thread_annotations.h"

namespace dcp {

spdlog::logger& logger() {
  // Looked up each time so that a logger registered by the user wins.
  if (auto l = spdlog::get("dcp")) return *l;
  static Mutex mu;
  MutexLock lock(mu);
  if (auto l = spdlog::get("dcp")) return *l;
  auto l = spdlog::stderr_color_mt("dcp");
  // $DCP_LOG_LEVEL: trace, debug, info (spdlog's default), warn, error,
  // critical or off. Another value is said once and ignored.
  if (const char* v = std::getenv("DCP_LOG_LEVEL"); v && *v) {
    const spdlog::level::level_enum level = spdlog::level::from_str(v);
    if (level == spdlog::level::off && std::strcmp(v, "off") != 0)
      l->warn(
          "$DCP_LOG_LEVEL: '{}' is not a level (trace, debug, info, warn, error, critical, "
          "off); ignored",
          v);
    else
      l->set_level(level);
  }
  return *l;
}

}  // namespace dcp
