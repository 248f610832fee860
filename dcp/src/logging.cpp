#include "dcp/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace dcp {

spdlog::logger& logger() {
  // Looked up each time so that a logger registered by the user wins.
  if (auto l = spdlog::get("dcp")) return *l;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (auto l = spdlog::get("dcp")) return *l;
  auto l = spdlog::stderr_color_mt("dcp");
  return *l;
}

}  // namespace dcp
