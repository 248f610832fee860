// Error messages a person can act on: no C++ backtraces, and context (the
// key, the file) added where an error from below is passed on.
#pragma once

#include <exception>
#include <string>

namespace dcp {
namespace internal {

// The message of `e`. c10::Error::what() carries a backtrace of 10-30
// frames; this gives its message without it (the backtrace is logged at
// debug level).
std::string error_text(const std::exception& e);

// Inside a catch block: rethrows the exception being handled with
// "<context>: " in front of its message. A dcp::Error keeps its code and
// retryability (a StorageError its errno); any other exception (a c10::Error
// from ATen, ...) becomes an internal Error with error_text() of it. A
// CheckpointError is rethrown as it is.
[[noreturn]] void rethrow_with_context(const std::string& context);

}  // namespace internal
}  // namespace dcp
