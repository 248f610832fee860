// ckpt stats RUN_DIR: what each save of a run cost, from
// <dir>/dcp_manager.stats (dcp/manager/stats.h), and a summary. Read only.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "dcp/manager/stats.h"
#include "run_dir.h"

namespace ckpt {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

CLI::App* add_stats(CLI::App& app, StatsArgs& a) {
  auto* cmd = app.add_subcommand(
      "stats",
      "what each save of a run cost (from RUN_DIR/dcp_manager.stats, which the CheckpointManager "
      "appends to after each commit): step, async, start, blocking seconds (the training loop "
      "waited), seconds until durable (committed), bytes, GB/s; then the median blocking and "
      "until-durable seconds, and the fraction of wall time spent blocked: the blocking seconds "
      "of every save but the last, over the wall time from the first save's start to the last's "
      "(the last save's blocking falls after that span). With saves of several runs in the file, "
      "the time between them counts as wall time");
  cmd->add_option("dir", a.dir, "a CheckpointManager's directory")->required();
  cmd->add_flag("--json", a.json,
                "one JSON object: {\"dir\", \"saves\": [...], \"summary\": {...}}");
  return cmd;
}

int run_stats(const StatsArgs& a) {
  size_t skipped = 0;
  const auto saves = dcp::manager::read_save_statistics(a.dir, nullptr, &skipped);
  std::vector<double> blocking, durable;
  double blocked = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < saves.size(); ++i) {
    blocking.push_back(saves[i].blocking_seconds);
    durable.push_back(saves[i].durable_seconds);
    bytes += saves[i].bytes;
    if (i + 1 < saves.size()) blocked += saves[i].blocking_seconds;
  }
  const double span = saves.size() >= 2 ? saves.back().start_time - saves.front().start_time : 0;
  const bool have_fraction = saves.size() >= 2 && span > 0;
  const double fraction = have_fraction ? blocked / span : 0;
  if (a.json) {
    nlohmann::ordered_json j;
    j["dir"] = a.dir;
    j["saves"] = nlohmann::ordered_json::array();
    for (const auto& s : saves) {
      nlohmann::ordered_json o;
      o["step"] = s.step;
      o["async"] = s.async;
      o["start_time"] = s.start_time;
      o["blocking_seconds"] = s.blocking_seconds;
      o["durable_seconds"] = s.durable_seconds;
      o["bytes"] = s.bytes;
      o["gbps"] = s.gbps;
      j["saves"].push_back(std::move(o));
    }
    nlohmann::ordered_json sum;
    sum["saves"] = saves.size();
    sum["bytes"] = bytes;
    sum["median_blocking_seconds"] = median(blocking);
    sum["median_durable_seconds"] = median(durable);
    sum["wall_seconds"] = span;
    sum["blocked_seconds"] = blocked;
    sum["blocked_fraction"] =
        have_fraction ? nlohmann::ordered_json(fraction) : nlohmann::ordered_json();
    sum["skipped_lines"] = skipped;
    j["summary"] = std::move(sum);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (saves.empty()) {
    std::printf(
        "%s: no save statistics (%s is written by the CheckpointManager after each "
        "commit)%s\n",
        a.dir.c_str(), dcp::manager::kStatsFileName,
        skipped ? (", " + std::to_string(skipped) + " unreadable line(s)").c_str() : "");
    return 0;
  }
  std::printf("  %-10s %-5s %-19s %12s %12s %10s %8s\n", "step", "async", "started", "blocking s",
              "durable s", "size", "GB/s");
  for (const auto& s : saves)
    std::printf("  %-10lld %-5s %-19s %12.4f %12.4f %10s %8.3f\n", static_cast<long long>(s.step),
                s.async ? "yes" : "no", local_time(s.start_time).c_str(), s.blocking_seconds,
                s.durable_seconds, human_bytes(s.bytes).c_str(), s.gbps);
  std::printf("%zu saves, %s: median blocking %.4f s, median until durable %.4f s", saves.size(),
              human_bytes(bytes).c_str(), median(blocking), median(durable));
  if (have_fraction)
    std::printf(
        "; blocked %.3f%% of wall time (%.3f s of %.1f s between the first and last "
        "save's start)\n",
        100 * fraction, blocked, span);
  else
    std::printf("; blocked fraction: needs two saves\n");
  if (skipped) std::printf("(%zu unreadable line(s) skipped: a torn last line)\n", skipped);
  return 0;
}

}  // namespace ckpt
