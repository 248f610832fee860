// The documented ranges of options.h as checks, shared by validate() and the
// YAML loader (config.cpp) so that the two never disagree. Private to
// dcp_manager.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "dcp/manager/options.h"

namespace dcp {
namespace internal {

struct IntRange {
  int64_t min;
  int64_t max;
};

// The range of the integer field `key` ("checkpoint.storage.threads"); the
// elements of a list ("checkpoint.save.at_steps[2]") by the list's key.
// Every range lies within the field's C++ type.
IntRange integer_range(const std::string& key);
// "must be in 1..1024, not 4096".
std::string range_problem(const IntRange& range, const std::string& value);

enum class IntParse { kOk, kNotInteger, kOutOfRange };
// Decimal digits with an optional sign into an int64_t.
IntParse parse_int64(const std::string& text, int64_t& out);
// A number in decimal notation: optional sign, digits with an optional
// fraction, optional exponent ("2.5", ".5", "1e3"); not inf, nan or hex.
// False when `text` is not one or does not fit a double.
bool parse_decimal(const std::string& text, double& out);

// What is wrong with a value ("" when nothing): of a number of seconds
// (finite, >= 0), of `dir`, of `resume.from`.
extern const char* const kSecondsType;  // "a finite number of seconds >= 0"
std::string seconds_problem(double seconds);
std::string dir_problem(const std::string& dir);
// Of save.max_overhead (0, or in (0, 1)), save.mtbf_seconds (finite, >= 0;
// 0: off) and log.level (empty or a level name).
extern const char* const kFractionType;
extern const char* const kMtbfType;
std::string max_overhead_problem(double fraction);
std::string mtbf_problem(double seconds);
std::string log_level_problem(const std::string& level);
// Of storage.pytorch_version ("2" or "1.13").
std::string pytorch_version_problem(const std::string& version);
std::string resume_from_problem(const std::string& from);

// Called with the key ("checkpoint.keep.last") and the problem; must throw.
using Report = std::function<void(const std::string& key, const std::string& problem)>;
// Reports the first field of `options` that validate() refuses.
void validate(const manager::CheckpointManagerOptions& options, const Report& report);

}  // namespace internal
}  // namespace dcp
