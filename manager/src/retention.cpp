// Retention: what the keep policy keeps, and the removal of the rest after
// each commit (step 7 of the commit protocol in manager.cpp).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "dcp/logging.h"
#include "directory.h"

namespace dcp {
namespace manager {

std::set<int64_t> steps_to_keep(const std::vector<CheckpointInfo>& committed, const KeepPolicy& p) {
  std::set<int64_t> keep;
  if (committed.empty()) return keep;
  std::vector<CheckpointInfo> sorted = committed;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.step < b.step; });
  if (p.last == 0) {
    for (const auto& c : sorted) keep.insert(c.step);
    return keep;
  }
  keep.insert(sorted.back().step);  // the newest, always
  for (size_t i = sorted.size() > static_cast<size_t>(p.last) ? sorted.size() - p.last : 0;
       i < sorted.size(); ++i)
    keep.insert(sorted[i].step);
  if (p.every_steps > 0)
    for (const auto& c : sorted)
      if (c.step % p.every_steps == 0) keep.insert(c.step);
  if (p.every_seconds > 0) {
    double last_kept = -1e300;
    for (const auto& c : sorted)
      if (c.wall_time - last_kept >= p.every_seconds) {
        keep.insert(c.step);
        last_kept = c.wall_time;
      }
  }
  if (p.best.count > 0 && !p.best.metric.empty()) {
    std::vector<const CheckpointInfo*> ranked;
    for (const auto& c : sorted)
      if (c.metrics.count(p.best.metric)) ranked.push_back(&c);
    std::stable_sort(ranked.begin(), ranked.end(), [&](const auto* a, const auto* b) {
      const double x = a->metrics.at(p.best.metric), y = b->metrics.at(p.best.metric);
      return p.best.maximize ? x > y : x < y;
    });
    for (size_t i = 0; i < ranked.size() && i < static_cast<size_t>(p.best.count); ++i)
      keep.insert(ranked[i]->step);
  }
  return keep;
}

namespace internal {

namespace {

// ".damaged.step_N.<k>" or ".superseded.step_N.<k>" -> N.
bool parse_set_aside(const std::string& name, int64_t& step) {
  for (const char* kind : {kDamaged, kSuperseded}) {
    const std::string prefix = std::string(".") + kind + ".";
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());  // step_N.<k>
    const auto dot = rest.rfind('.');
    return dot != std::string::npos && parse_step_dir(rest.substr(0, dot), step);
  }
  return false;
}

}  // namespace

void retain(Env* env, const std::string& dir, int64_t step, const KeepPolicy& policy,
            uint64_t save_number, bool sync, const std::function<void(std::string)>& delete_later) {
  // Renamed first, the renames made durable, and only then deleted: a power
  // cut must not bring back a step_N whose files are partly deleted.
  std::vector<std::string> doomed;
  try {
    const auto committed = list_committed(dir, env);
    const auto keep = steps_to_keep(committed, policy);
    for (const auto& c : committed) {
      if (keep.count(c.step)) continue;
      const std::string old = dir + "/.old." + CheckpointManager::step_dir_name(c.step) + ".r" +
                              std::to_string(save_number);
      rename_or_throw(env, c.path, old);  // invisible at once; deleted in the background
      doomed.push_back(old);
      logger().debug("retention: removing checkpoint of step {}", c.step);
    }
    // Directories moved aside are kept for inspection until a checkpoint of
    // a later step commits.
    for (const auto& name : entries(env, dir)) {
      int64_t aside = 0;
      if (!parse_set_aside(name, aside) || aside >= step) continue;
      const std::string old = dir + "/.old" + name;  // .old.damaged.step_N.<k>
      rename_or_throw(env, dir + "/" + name, old);
      doomed.push_back(old);
      logger().info("retention: removing '{}' (step {} is committed)", name, step);
    }
    if (sync && !doomed.empty()) fsync_dir(env, dir);
  } catch (const std::exception& e) {
    logger().warn("retention after step {} failed (the checkpoint is committed): {}", step,
                  e.what());
    return;  // what was renamed stays until start-up removes it (.old.*)
  }
  for (const auto& old : doomed) delete_later(old);
}

}  // namespace internal
}  // namespace manager
}  // namespace dcp
