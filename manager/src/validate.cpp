// The ranges of options.h (validate()) and the signal names.
#include "validate.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <csignal>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "dcp/error.h"
#include "dcp/filesystem.h"

namespace dcp {
namespace internal {

namespace {

const std::pair<const char*, int> kSignals[] = {{"SIGTERM", SIGTERM}, {"SIGUSR1", SIGUSR1},
                                                {"SIGUSR2", SIGUSR2}, {"SIGINT", SIGINT},
                                                {"SIGHUP", SIGHUP},   {"SIGQUIT", SIGQUIT}};

std::string known_signals() {
  std::string known;
  for (const auto& [n, s] : kSignals) known += (known.empty() ? "" : ", ") + std::string(n);
  return known;
}

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Every integer field of CheckpointManagerOptions and its documented range.
const std::pair<const char*, IntRange> kIntegerRanges[] = {
    {"checkpoint.save.every_steps", {0, kInt64Max}},
    {"checkpoint.save.at_steps", {1, kInt64Max}},
    {"checkpoint.async.max_in_flight", {1, manager::kMaxAsyncInFlight}},
    {"checkpoint.async.writer_threads", {1, manager::kMaxStorageThreads}},
    {"checkpoint.keep.last", {0, INT_MAX}},
    {"checkpoint.keep.every_steps", {0, kInt64Max}},
    {"checkpoint.keep.best.count", {0, INT_MAX}},
    {"checkpoint.storage.threads", {1, manager::kMaxStorageThreads}},
};

std::string integer_problem(const std::string& key, int64_t value) {
  const IntRange r = integer_range(key);
  return value < r.min || value > r.max ? range_problem(r, std::to_string(value)) : "";
}

bool all_digits(const std::string& s, size_t from) {
  return from < s.size() &&
         std::all_of(s.begin() + from, s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

const char* const kSecondsType = "a finite number of seconds >= 0";
const char* const kFractionType = "a fraction of wall time in (0, 1), e.g. 0.05 for 5% (0: off)";
const char* const kMtbfType = "a finite number of seconds > 0 (0: off)";

std::string pytorch_version_problem(const std::string& version) {
  try {
    check_pytorch_version(version);
  } catch (const InvalidArgumentError&) {
    return "must be \"2\" or \"1.13\", not '" + version + "'";
  }
  return "";
}

IntRange integer_range(const std::string& key) {
  const std::string base = key.substr(0, key.find('['));
  for (const auto& [k, r] : kIntegerRanges)
    if (base == k) return r;
  throw std::logic_error("dcp::manager: no range for " + key);
}

std::string range_problem(const IntRange& range, const std::string& value) {
  return "must be in " + std::to_string(range.min) + ".." + std::to_string(range.max) + ", not " +
         value;
}

IntParse parse_int64(const std::string& text, int64_t& out) {
  const size_t sign = !text.empty() && (text[0] == '+' || text[0] == '-') ? 1 : 0;
  if (!all_digits(text, sign)) return IntParse::kNotInteger;
  const char* begin = text.data() + (text[0] == '+' ? 1 : 0);
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(begin, end, out);
  if (ec == std::errc::result_out_of_range) return IntParse::kOutOfRange;
  return ec == std::errc() && ptr == end ? IntParse::kOk : IntParse::kNotInteger;
}

bool parse_decimal(const std::string& text, double& out) {
  const size_t n = text.size();
  size_t i = n > 0 && (text[0] == '+' || text[0] == '-') ? 1 : 0;
  const auto digits = [&] {
    const size_t from = i;
    while (i < n && text[i] >= '0' && text[i] <= '9') ++i;
    return i - from;
  };
  size_t mantissa = digits();
  if (i < n && text[i] == '.') {
    ++i;
    mantissa += digits();
  }
  if (mantissa == 0) return false;
  if (i < n && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < n && (text[i] == '+' || text[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  if (i != n) return false;
  const char* begin = text.data() + (text[0] == '+' ? 1 : 0);
  const auto [ptr, ec] = std::from_chars(begin, text.data() + n, out);
  return ec == std::errc() && ptr == text.data() + n && std::isfinite(out);
}

std::string seconds_problem(double seconds) {
  if (std::isfinite(seconds) && seconds >= 0) return "";
  std::ostringstream s;
  s << "must be " << kSecondsType << ", not " << seconds;
  return s.str();
}

std::string max_overhead_problem(double f) {
  if (f == 0 || (std::isfinite(f) && f > 0 && f < 1)) return "";
  std::ostringstream s;
  s << "must be " << kFractionType << ", not " << f;
  return s.str();
}

std::string mtbf_problem(double seconds) {
  if (std::isfinite(seconds) && seconds >= 0) return "";
  std::ostringstream s;
  s << "must be " << kMtbfType << ", not " << seconds;
  return s.str();
}

std::string log_level_problem(const std::string& level) {
  if (level.empty()) return "";
  for (const char* l : {"trace", "debug", "info", "warn", "error", "critical", "off"})
    if (level == l) return "";
  return "must be trace, debug, info, warn, error, critical or off, not '" + level + "'";
}

std::string dir_problem(const std::string& dir) {
  if (dir.empty()) return "must not be empty";
  if (dir.find('\0') != std::string::npos) return "must not contain a NUL character";
  return "";
}

std::string resume_from_problem(const std::string& from) {
  if (from.empty()) return "must be latest, none, a step or a path, not empty";
  if (from.find('\0') != std::string::npos) return "must not contain a NUL character";
  // The manager reads digits as a step (anything else is a path): they must
  // fit int64_t. A signed number is refused rather than taken for a path.
  const size_t sign = from[0] == '+' || from[0] == '-' ? 1 : 0;
  if (!all_digits(from, sign)) return "";
  int64_t step = 0;
  if (sign == 0 && parse_int64(from, step) == IntParse::kOk) return "";
  return "a step must be in 0.." + std::to_string(kInt64Max) + " (digits only), not " + from;
}

void validate(const manager::CheckpointManagerOptions& o, const Report& report) {
  const auto check = [&](const std::string& key, const std::string& problem) {
    if (problem.empty()) return;
    report(key, problem);
    throw std::logic_error("dcp::manager: a validation report returned");
  };
  const auto integer = [&](const std::string& key, int64_t v) {
    check(key, integer_problem(key, v));
  };
  check("checkpoint.dir", dir_problem(o.dir));
  integer("checkpoint.save.every_steps", o.save.every_steps);
  check("checkpoint.save.every_seconds", seconds_problem(o.save.every_seconds));
  for (size_t i = 0; i < o.save.at_steps.size(); ++i)
    integer("checkpoint.save.at_steps[" + std::to_string(i) + "]", o.save.at_steps[i]);
  check("checkpoint.save.max_overhead", max_overhead_problem(o.save.max_overhead));
  check("checkpoint.save.mtbf_seconds", mtbf_problem(o.save.mtbf_seconds));
  for (size_t i = 0; i < o.save.on_signals.size(); ++i) {
    const int s = o.save.on_signals[i];
    const bool known = std::any_of(std::begin(kSignals), std::end(kSignals),
                                   [&](const auto& k) { return k.second == s; });
    if (!known)
      check("checkpoint.save.on_signals[" + std::to_string(i) + "]",
            "unknown signal " + std::to_string(s) + " (known: " + known_signals() + ")");
  }
  integer("checkpoint.async.max_in_flight", o.async.max_in_flight);
  integer("checkpoint.async.writer_threads", o.async.writer_threads);
  integer("checkpoint.keep.last", o.keep.last);
  integer("checkpoint.keep.every_steps", o.keep.every_steps);
  check("checkpoint.keep.every_seconds", seconds_problem(o.keep.every_seconds));
  integer("checkpoint.keep.best.count", o.keep.best.count);
  if (o.keep.best.count > 0 && o.keep.best.metric.empty())
    check("checkpoint.keep.best.count", "count > 0 needs a metric (checkpoint.keep.best.metric)");
  check("checkpoint.resume.from", resume_from_problem(o.resume.from));
  for (size_t i = 0; i < o.resume.rename.size(); ++i) {
    const KeyRename& rule = o.resume.rename[i];
    const std::string key = "checkpoint.resume.rename[" + std::to_string(i) + "]";
    if (rule.from == rule.to)
      check(key, "from and to are the same ('" + rule.from + "'): the rule does nothing");
    for (size_t j = 0; j < i; ++j)
      if (rule.from.compare(0, o.resume.rename[j].from.size(), o.resume.rename[j].from) == 0)
        check(key, "never applies: rule " + std::to_string(j) + " (from '" +
                       o.resume.rename[j].from + "') takes every key that starts with '" +
                       rule.from + "' first");
  }
  integer("checkpoint.storage.threads", o.storage.threads);
  const ReplicaCheck rc = o.storage.check_replicas;
  if (rc != ReplicaCheck::kError && rc != ReplicaCheck::kWarn && rc != ReplicaCheck::kOff)
    check("checkpoint.storage.check_replicas",
          "must be error, warn or off, not " + std::to_string(static_cast<int>(rc)));
  const StorageFormat sf = o.storage.format;
  if (sf != StorageFormat::kDcp && sf != StorageFormat::kPyTorchDcp)
    check("checkpoint.storage.format",
          "must be dcp++ or pytorch-dcp, not " + std::to_string(static_cast<int>(sf)));
  check("checkpoint.storage.pytorch_version", pytorch_version_problem(o.storage.pytorch_version));
  check("checkpoint.log.level", log_level_problem(o.log.level));
  if (o.on_error != manager::OnError::kRaise && o.on_error != manager::OnError::kWarn)
    check("checkpoint.on_error",
          "must be raise or warn, not " + std::to_string(static_cast<int>(o.on_error)));
}

}  // namespace internal

namespace manager {

using namespace internal;

void validate(const CheckpointManagerOptions& options) {
  internal::validate(options, [](const std::string& key, const std::string& problem) {
    throw ConfigError(key + ": " + problem);
  });
}

int signal_from_name(const std::string& name) {
  for (const auto& [n, s] : kSignals)
    if (name == n) return s;
  throw ConfigError("unknown signal '" + name + "' (known: " + known_signals() + ")");
}

std::string signal_name(int signal) {
  for (const auto& [n, s] : kSignals)
    if (s == signal) return n;
  return "signal " + std::to_string(signal);
}

}  // namespace manager
}  // namespace dcp
