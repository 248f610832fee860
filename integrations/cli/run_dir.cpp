// ckpt ls RUN_DIR: what a run directory holds, one row per checkpoint (or
// what is left of one), read only: no lock is taken, so it works on the
// directory of a live run (an entry that goes away while it is read is left
// out). The layout is docs/MANAGER.md's.
#include <time.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <vector>

#include "dcp/manager/manager.h"
#include "dcp/manager/stats.h"
#include "run_dir.h"

namespace ckpt {

std::string human_bytes(uint64_t bytes) {
  char buf[64];
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

std::string local_time(double epoch_seconds) {
  if (epoch_seconds <= 0) return "-";
  const time_t t = static_cast<time_t>(epoch_seconds);
  struct tm tm {};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

namespace {

namespace fs = std::filesystem;

struct Row {
  std::string name, path;
  int64_t step = -1;
  std::string state;  // committed, leftover, moved-aside, uncommitted, checkpoint, damaged
  std::string note;
  double committed_at = 0;
  uint64_t bytes = 0;
  int64_t items = -1;
  int world_size = 0;
  std::string format;
  std::map<std::string, double> metrics;
  bool newest = false;
};

// The bytes of the files under `path` (0 for what cannot be read).
uint64_t size_on_disk(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::file_size(path, ec);
  uint64_t total = 0;
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2)) {
      const auto n = it->file_size(e2);
      if (!e2) total += n;
    }
  }
  return total;
}

// "step_0000000120" or ".tmp.step_0000000120.3" -> 120.
int64_t step_of(const std::string& name) {
  const size_t at = name.find("step_");
  if (at == std::string::npos) return -1;
  size_t end = at + 5;
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
  if (end == at + 5 || end - at - 5 > 18) return -1;
  return std::stoll(name.substr(at + 5, end - at - 5));
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// A checkpoint of any format dcp++ reads, not named as the manager names them.
bool is_other_checkpoint(const std::string& path, const std::string& name) {
  if (ends_with(name, ".pt") || ends_with(name, ".pth") || ends_with(name, ".safetensors"))
    return true;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return false;
  return dcp::is_committed_checkpoint(path) || dcp::checkpoint_format(path) != "dcp++";
}

void fill_from_checkpoint(Row& r) {
  try {
    const dcp::Metadata md = dcp::read_metadata(r.path);
    r.items = static_cast<int64_t>(md.storage_data.size());
    r.world_size = md.world_size;
    r.format = dcp::checkpoint_format(r.path);
  } catch (const std::exception&) {
  }
}

void fill_from_record(Row& r) {
  try {
    const auto info = dcp::manager::read_checkpoint_record(r.path);
    r.committed_at = info.wall_time;
    r.world_size = info.world_size;
    r.metrics = info.metrics;
  } catch (const std::exception&) {
  }
}

std::string verify_problem(const std::string& path, int threads) {
  try {
    dcp::FileSystemReaderOptions ro;
    ro.threads = threads;
    ro.verify_checksums = true;
    dcp::LoadOptions lo;
    lo.storage_reader = dcp::make_filesystem_reader(path, ro);
    lo.planner = std::make_shared<VerifyPlanner>(lo.storage_reader);
    dcp::StateDict none;
    dcp::load(none, lo);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::vector<Row> scan(const std::string& dir, bool verify, int threads) {
  dcp::Env* env = dcp::env_for(dir);
  std::vector<std::string> names;
  std::error_code ec;
  // Given a checkpoint rather than a run directory (step_N, model.pt, a
  // PyTorch DCP directory): one row for it, so that ls says what it is.
  fs::path dir_path = fs::path(dir).lexically_normal();
  if (dir_path.filename().empty()) dir_path = dir_path.parent_path();  // "a/b/"
  const std::string name_of_dir = dir_path.filename().string();
  const bool is_file = fs::is_regular_file(dir, ec);
  if (is_file || (dir.rfind("memory://", 0) != 0 && fs::exists(fs::path(dir) / ".metadata", ec))) {
    names.push_back("");
  } else {
    names = env->list_dir(dcp::env_path(dir));
  }
  std::map<std::string, dcp::manager::CheckpointInfo> committed;
  for (auto& info : names.size() == 1 && names[0].empty()
                        ? std::vector<dcp::manager::CheckpointInfo>{}
                        : dcp::manager::list_committed(dir)) {
    const std::string name = fs::path(info.path).filename().string();
    committed[name] = std::move(info);
  }
  std::vector<Row> rows;
  for (const std::string& name : names) {
    if (name == ".lock" || name == dcp::manager::kStatsFileName) continue;
    Row r;
    r.name = name;
    r.path = name.empty() ? dir : dir + "/" + name;
    r.step = step_of(name);
    if (!fs::exists(r.path, ec)) continue;  // gone meanwhile (a live run)
    if (name.empty()) {                     // the argument itself is a checkpoint
      r.name = name_of_dir;
      r.step = step_of(r.name);
      r.state = "checkpoint";
      r.note = "the path given is a checkpoint, not a run directory";
      fill_from_record(r);
      fill_from_checkpoint(r);
      if (r.format.empty()) r.note += "; its metadata does not read";
    } else if (name.rfind("step_", 0) == 0 && r.step >= 0 &&
               name.find_first_not_of("0123456789", 5) == std::string::npos) {
      auto it = committed.find(name);
      if (it != committed.end()) {
        r.state = "committed";
        r.committed_at = it->second.wall_time;
        r.world_size = it->second.world_size;
        r.metrics = it->second.metrics;
      } else {
        r.state = "uncommitted";
        if (!dcp::is_committed_checkpoint(r.path)) {
          r.note = "no metadata";
        } else {
          try {
            dcp::manager::read_checkpoint_record(r.path);
            r.note = "not committed";
          } catch (const std::exception& e) {
            r.note = e.what();
          }
        }
      }
      fill_from_checkpoint(r);
    } else if (name.rfind(".tmp.", 0) == 0) {
      r.state = "leftover";
      r.note = "a save in flight, or left by a crashed one";
    } else if (name.rfind(".old.", 0) == 0) {
      r.state = "leftover";
      r.note = "being deleted by retention, or left by a crash";
    } else if (name.rfind(".replaced.", 0) == 0) {
      r.state = "leftover";
      r.note =
          "set aside by a forced save of its step; put back at start-up if that did not commit";
      fill_from_record(r);
      fill_from_checkpoint(r);
    } else if (name.rfind(".damaged.", 0) == 0) {
      r.state = "moved-aside";
      r.note = "damaged: did not load or was not committed";
      fill_from_record(r);
      fill_from_checkpoint(r);
    } else if (name.rfind(".superseded.", 0) == 0) {
      r.state = "moved-aside";
      r.note = "superseded: newer than the step a run resumed from";
      fill_from_record(r);
      fill_from_checkpoint(r);
    } else if (name[0] != '.' && is_other_checkpoint(r.path, name)) {
      r.state = "checkpoint";
      r.note = "not a CheckpointManager's";
      fill_from_checkpoint(r);
      if (r.format.empty()) continue;  // nothing dcp++ reads
    } else {
      continue;
    }
    r.bytes = size_on_disk(r.path);
    if (verify && (r.state == "committed" || r.state == "checkpoint")) {
      const std::string why = verify_problem(r.path, threads);
      if (!why.empty()) {
        r.state = "damaged";
        r.note = why;  // on one line
        for (size_t at; (at = r.note.find('\n')) != std::string::npos;)
          r.note.replace(at, r.note.find_first_not_of(' ', at + 1) - at, "; ");
      }
    }
    rows.push_back(std::move(r));
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.step != b.step ? a.step < b.step : a.name < b.name;
  });
  for (auto it = rows.rbegin(); it != rows.rend(); ++it)
    if (it->state == "committed") {
      it->newest = true;
      break;
    }
  return rows;
}

std::string metrics_text(const std::map<std::string, double>& m) {
  std::string s;
  char buf[64];
  for (const auto& [k, v] : m) {
    std::snprintf(buf, sizeof buf, "%.6g", v);
    s += (s.empty() ? "" : " ") + k + "=" + buf;
  }
  return s;
}

}  // namespace

CLI::App* add_ls(CLI::App& app, LsArgs& a) {
  auto* cmd = app.add_subcommand(
      "ls",
      "list a run directory's checkpoints: step, when committed, size, items, world size, format, "
      "metrics, state (committed; leftover: .tmp.* of a save in flight or crashed, .old.* being "
      "deleted; moved-aside: .damaged.*, .superseded.*; uncommitted: step_N without valid "
      "metadata and record; checkpoint: another program's; damaged: fails --verify); * marks the "
      "newest committed. Read only, takes no lock: fine on a live run's directory");
  cmd->add_option("dir", a.dir, "a CheckpointManager's directory (or any directory of checkpoints)")
      ->required();
  cmd->add_flag("--json", a.json, "one JSON object: {\"dir\", \"checkpoints\": [...]}");
  cmd->add_flag("--verify", a.verify,
                "read every committed checkpoint and check its checksums (as ckpt verify); a "
                "failing one is listed as damaged");
  cmd->add_option("--threads", a.threads, "reader threads for --verify")->check(CLI::Range(1, 256));
  return cmd;
}

int run_ls(const LsArgs& a) {
  const std::vector<Row> rows = scan(a.dir, a.verify, a.threads);
  if (a.json) {
    nlohmann::ordered_json j;
    j["dir"] = a.dir;
    j["checkpoints"] = nlohmann::ordered_json::array();
    for (const Row& r : rows) {
      nlohmann::ordered_json c;
      c["name"] = r.name;
      c["path"] = r.path;
      c["step"] = r.step >= 0 ? nlohmann::ordered_json(r.step) : nlohmann::ordered_json();
      c["state"] = r.state;
      c["note"] = r.note;
      c["newest"] = r.newest;
      c["committed_at"] =
          r.committed_at > 0 ? nlohmann::ordered_json(r.committed_at) : nlohmann::ordered_json();
      c["bytes"] = r.bytes;
      c["items"] = r.items >= 0 ? nlohmann::ordered_json(r.items) : nlohmann::ordered_json();
      c["world_size"] =
          r.world_size > 0 ? nlohmann::ordered_json(r.world_size) : nlohmann::ordered_json();
      c["format"] = r.format.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(r.format);
      c["metrics"] = nlohmann::ordered_json::object();
      for (const auto& [k, v] : r.metrics) c["metrics"][k] = v;
      j["checkpoints"].push_back(std::move(c));
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  size_t n_committed = 0;
  int64_t newest = -1;
  for (const Row& r : rows) {
    n_committed += r.state == "committed";
    if (r.newest) newest = r.step;
  }
  std::printf("%s: %zu committed checkpoint(s)%s, %zu other entr%s\n", a.dir.c_str(), n_committed,
              newest >= 0 ? (", newest step " + std::to_string(newest)).c_str() : "",
              rows.size() - n_committed, rows.size() - n_committed == 1 ? "y" : "ies");
  if (rows.empty()) return 0;
  std::printf("  %-10s %-19s %10s %6s %5s %-19s %-12s %s\n", "step", "committed", "size", "items",
              "world", "format", "state", "name / metrics");
  for (const Row& r : rows) {
    std::string extra = r.name;
    const std::string m = metrics_text(r.metrics);
    if (!m.empty()) extra += "  " + m;
    if (!r.note.empty() && r.state != "committed") extra += "  (" + r.note + ")";
    std::printf("%c %-10s %-19s %10s %6s %5s %-19s %-12s %s\n", r.newest ? '*' : ' ',
                r.step >= 0 ? std::to_string(r.step).c_str() : "-",
                local_time(r.committed_at).c_str(), human_bytes(r.bytes).c_str(),
                r.items >= 0 ? std::to_string(r.items).c_str() : "-",
                r.world_size > 0 ? std::to_string(r.world_size).c_str() : "-",
                r.format.empty() ? "-" : r.format.c_str(), r.state.c_str(), extra.c_str());
  }
  return 0;
}

}  // namespace ckpt
