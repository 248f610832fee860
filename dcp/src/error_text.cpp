#include "error_text.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include "dcp/error.h"
#include "dcp/logging.h"

namespace dcp {
namespace internal {

std::string error_text(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) {
    auto& log = logger();
    if (log.should_log(spdlog::level::debug)) log.debug("c10::Error with backtrace: {}", e.what());
    return ce->what_without_backtrace();
  }
  return e.what();
}

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const CheckpointError&) {
    throw;
  } catch (const StorageError& e) {
    throw StorageError(context + ": " + e.what(), e.error_number(), e.retryable());
  } catch (const Error& e) {
    throw Error(e.code(), context + ": " + e.what(), e.retryable());
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kInternal, context + ": " + error_text(e));
  } catch (...) {
    throw Error(ErrorCode::kInternal, context + ": an unknown exception");
  }
}

}  // namespace internal
}  // namespace dcp
