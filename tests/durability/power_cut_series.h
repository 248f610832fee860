// The manager series the power-cut tests cut (power_cut_test.cpp), and the
// checks after a reboot. Every value of the saved state is a function of the
// step, so a loaded checkpoint is checked whole, bit for bit.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>

#include "common/test_util.h"
#include "dcp/checkpoint.h"
#include "dcp/collectives.h"
#include "dcp/fault_injection_env.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace power_cut {

namespace fs = std::filesystem;

constexpr int kKeepLast = 2;
constexpr int64_t kDamagedStep = 4;

// Two tensors and plain values, all set from the step (and the rank: each
// rank has its own "local" tensor; "w" is sharded-free and replicated).
class SeriesState : public Stateful {
 public:
  // `world_size` > 1: the state of every rank at once (what one process
  // loads to check a checkpoint of that many ranks).
  explicit SeriesState(int rank = 0, int world_size = 0) : rank_(rank), world_size_(world_size) {}
  static at::Tensor w_of(int64_t step) {
    return at::arange(0, 2048, at::kFloat).reshape({64, 32}) * 0.5f + static_cast<float>(step);
  }
  static at::Tensor local_of(int64_t step, int rank) {
    return at::arange(0, 300, at::kLong) * (rank + 1) + step;
  }
  void set(int64_t s) {
    step = s;
    w = w_of(s);
    local = local_of(s, rank_);
  }
  StateDict state_dict() override {
    StateDict sd{{"w", w},
                 {"local_" + std::to_string(rank_), local},
                 {"step", step},
                 {"tag", std::string("step ") + std::to_string(step)}};
    for (int r = 1; r < world_size_; ++r) sd["local_" + std::to_string(r)] = local_of(step, r);
    return sd;
  }
  void load_state_dict(const StateDict& sd) override { step = sd.at("step").to_int(); }

  at::Tensor w = at::zeros({64, 32});
  at::Tensor local = at::zeros({300}, at::kLong);
  int64_t step = 0;

 private:
  int rank_;
  int world_size_;
};

inline std::string step_dir(const std::string& dir, int64_t step) {
  return dir + "/" + CheckpointManager::step_dir_name(step);
}

inline CheckpointManagerOptions series_options(const std::string& dir, Env* env, bool async,
                                               bool fsync = true) {
  CheckpointManagerOptions o;
  o.dir = dir;
  o.env = env;
  o.save.every_steps = 0;  // the series calls save() itself
  o.save.at_end = false;
  o.save.on_signals = {};
  o.async.enabled = async;
  o.keep.last = kKeepLast;
  o.storage.fsync = fsync;
  o.storage.threads = 2;
  return o;
}

// What a series did before it stopped.
struct Outcome {
  std::set<int64_t> reported;  // steps a post-save callback reported committed
  bool damaged = false;        // step 4 was damaged on disk
  std::string error;           // what stopped it ("" when it ran to its end)
};

// Flips a byte in the middle of step 4's largest data file, durably, behind
// the Env's back (a disk that rotted, not an operation of the run).
inline void damage_step(const std::string& dir) {
  auto files = testing::data_files(step_dir(dir, kDamagedStep));
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return fs::file_size(a) > fs::file_size(b); });
  if (files.empty()) return;
  std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
  const auto mid = static_cast<std::streamoff>(fs::file_size(files[0]) / 2);
  f.seekg(mid);
  char c = 0;
  f.get(c);
  f.seekp(mid);
  f.put(static_cast<char>(c ^ 0x10));
}

// Run 1: saves 1..4; then damage; run 2: resumes (3), saves 5 and 6. Stops
// at the first exception (the power cut). With many ranks, `agree` is
// called by every rank after run 1 with whether it succeeded, and returns
// whether all did (then rank 0 damages step 4, and all agree again).
inline Outcome run_series(const std::string& dir, Env* env, bool async, int rank, bool fsync = true,
                          std::shared_ptr<Collectives> coll = nullptr,
                          std::shared_ptr<Collectives> async_coll = nullptr,
                          const std::function<bool(bool)>& agree = {}) {
  Outcome out;
  auto one_run = [&](int64_t expect_resume, std::vector<int64_t> steps) {
    CheckpointManager m(series_options(dir, env, async, fsync), coll, async_coll);
    auto s = std::make_shared<SeriesState>(rank);
    m.register_stateful("state", s);
    m.add_post_save_callback([&](const SaveStatistics& st) { out.reported.insert(st.step); });
    const int64_t from = m.resume();
    if (from != expect_resume)
      throw std::runtime_error("resumed from " + std::to_string(from) + ", expected " +
                               std::to_string(expect_resume));
    for (int64_t step : steps) {
      s->set(step);
      m.save(step);
      m.on_step(step);  // reaps a finished async save
    }
    m.wait();
    m.close();
  };
  bool ok = true;
  try {
    one_run(0, {1, 2, 3, 4});
  } catch (const std::exception& e) {
    out.error = e.what();
    ok = false;
  }
  if (!(agree ? agree(ok) : ok)) return out;
  if (rank == 0) damage_step(dir);
  out.reported.erase(kDamagedStep);
  out.damaged = true;
  if (agree) agree(true);
  try {
    one_run(3, {5, 6});
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}

// True when the checkpoint at `path` loads and every value is the one saved
// at `step` (all `world_size` ranks' tensors).
inline bool loads_exact(const std::string& path, int64_t step, int world_size, std::string& why) {
  try {
    StateDict sd = load_all(path);
    auto& st = sd.at("state").dict();
    bool ok = at::equal(st.at("w").tensor(), SeriesState::w_of(step)) &&
              st.at("step").to_int() == step &&
              st.at("tag").to_string() == "step " + std::to_string(step);
    for (int r = 0; r < world_size; ++r)
      ok = ok &&
           at::equal(st.at("local_" + std::to_string(r)).tensor(), SeriesState::local_of(step, r));
    if (!ok) why = "values differ from step " + std::to_string(step) + "'s";
    return ok;
  } catch (const std::exception& e) {
    why = e.what();
    return false;
  }
}

// A hash of what the run directory holds: names, sizes and bytes.
inline size_t tree_hash(const std::string& dir) {
  std::vector<std::string> parts;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (rel == ".lock" || rel == "dcp_manager.stats") continue;  // timings differ each run
    parts.push_back(rel +
                    (e.is_regular_file() ? ":" + testing::read_file(e.path().string()) : "/"));
  }
  std::sort(parts.begin(), parts.end());
  std::string all;
  for (const auto& p : parts) all += p + "\n";
  return std::hash<std::string>()(all);
}

struct Check {
  uint64_t lost_committed = 0;
  uint64_t false_committed = 0;
  bool resume_ok = false;
  size_t state_hash = 0;
  std::string report;
};

// After the reboot: what the directory holds against what was reported,
// then a resume (one process, no faults).
inline Check check_after_reboot(const std::string& dir, const Outcome& out, int world_size = 1) {
  Check c;
  std::ostringstream r;
  c.state_hash = tree_hash(dir);
  std::set<int64_t> loadable;
  try {
    for (const auto& info : list_committed(dir)) {
      std::string why;
      if (loads_exact(info.path, info.step, world_size, why)) {
        loadable.insert(info.step);
      } else if (!(out.damaged && info.step == kDamagedStep)) {
        c.false_committed++;
        r << "committed but does not load: " << info.path << ": " << why << "\n";
      }
    }
  } catch (const std::exception& e) {
    c.false_committed++;
    r << "cannot list " << dir << ": " << e.what() << "\n";
  }
  for (int64_t s : out.reported) {
    if (loadable.count(s)) continue;
    // The damaged step 4 was committed (retention counted it) before the
    // test damaged it.
    const auto newer =
        std::count_if(loadable.begin(), loadable.end(), [&](int64_t x) { return x > s; }) +
        (out.damaged && s < kDamagedStep ? 1 : 0);
    if (newer < kKeepLast) {
      c.lost_committed++;
      r << "step " << s << " was reported committed and is lost (" << newer << " newer loadable)\n";
    }
  }
  const int64_t expected = loadable.empty() ? 0 : *loadable.rbegin();
  try {
    CheckpointManager m(series_options(dir, nullptr, false));
    auto s = std::make_shared<SeriesState>(0, world_size);
    m.register_stateful("state", s);
    const int64_t got = m.resume();
    c.resume_ok = got == expected && (got == 0 || at::equal(s->w, SeriesState::w_of(got)));
    if (!c.resume_ok) r << "resume gave step " << got << ", expected " << expected << "\n";
  } catch (const std::exception& e) {
    r << "resume failed: " << e.what() << "\n";
  }
  r << "reported:";
  for (int64_t s : out.reported) r << " " << s;
  r << "; loadable:";
  for (int64_t s : loadable) r << " " << s;
  r << "; stopped by: " << out.error << "\n";
  c.report = r.str();
  return c;
}

}  // namespace power_cut
}  // namespace manager
}  // namespace dcp
