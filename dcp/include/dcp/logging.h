// dcp++ logs through spdlog, on a logger named "dcp" (created on first use,
// writing to stderr). Replace it with spdlog::register_logger before the
// first save to route the lines elsewhere.
#pragma once

#include "dcp/export.h"

namespace spdlog {
class logger;
}

namespace dcp {
// The "dcp" logger.
DCP_CORE_EXPORT spdlog::logger& logger();
}  // namespace dcp
