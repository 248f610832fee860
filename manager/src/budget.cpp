// The save interval from a budget (options.h SavePolicy::max_overhead,
// mtbf_seconds; docs/MANAGER.md "An interval from a budget").
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "dcp/manager/options.h"

namespace dcp {
namespace manager {

namespace {

// A step count from a real number of steps, clamped to 1..INT64_MAX.
int64_t steps_of(double n) {
  if (!(n >= 1)) return 1;  // also NaN
  if (n >= 9.2e18) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(n);
}

}  // namespace

BudgetInterval interval_from_budget(const SavePolicy& p, double cost, double step) {
  BudgetInterval b;
  if ((p.max_overhead <= 0 && p.mtbf_seconds <= 0) || !(cost >= 0) || !(step > 0)) return b;
  std::string why;
  if (p.max_overhead > 0) {
    const double f = p.max_overhead;
    // cost / (k * step + cost) <= f  <=>  k >= cost * (1 - f) / (f * step)
    b.overhead_steps = steps_of(std::ceil(cost * (1 - f) / (f * step) - 1e-9));
    why = fmt::format("max_overhead {:g} needs >= {} steps", f, b.overhead_steps);
  }
  if (p.mtbf_seconds > 0) {
    const double period = std::sqrt(2 * cost * p.mtbf_seconds);  // of training time
    b.young_daly_steps = steps_of(std::round(period / step));
    why += fmt::format("{}Young/Daly sqrt(2 * cost * mtbf {:g} s) = {:.3g} s = {} steps",
                       why.empty() ? "" : "; ", p.mtbf_seconds, period, b.young_daly_steps);
  }
  b.steps = std::max(b.overhead_steps, b.young_daly_steps);
  if (b.overhead_steps && b.young_daly_steps)
    why += b.young_daly_steps >= b.overhead_steps ? " (Young/Daly's)" : " (the overhead's floor)";
  b.reason =
      fmt::format("a save costs the loop {:.3f} s, a step takes {:.4f} s; {}", cost, step, why);
  return b;
}

}  // namespace manager
}  // namespace dcp
