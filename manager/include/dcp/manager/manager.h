// CheckpointManager: what a training loop calls each step.
//
//   auto opts = dcp::manager::load_manager_options("configs/default.yaml");
//   dcp::manager::CheckpointManager ckpt(opts);            // + collectives for many ranks
//   ckpt.register_stateful("model", model_state);
//   ckpt.register_stateful("optim", optim_state);
//   int64_t step = ckpt.resume();                          // 0 when starting fresh
//   for (; step < steps; ++step) {
//     train_one_step();
//     if (ckpt.on_step(step + 1, {{"loss", loss}})) break;  // preempted: saved, stop
//   }
//   ckpt.on_train_end(steps);
//
// Layout of the checkpoint directory:
//   <dir>/step_0000001000/   a committed checkpoint (dcp files + dcp_manager.record)
//   <dir>/.tmp.step_.../     a save in progress (never read; removed at start-up)
//   <dir>/.old.step_.../     a checkpoint being deleted by retention
//   <dir>/.damaged.step_N.k/ a step_N that did not load or was not committed,
//                            moved aside (kept until a later step commits)
//   <dir>/.superseded.step_N.k/ a checkpoint newer than the step resumed from
//                            (resume.from: <step> or none; kept likewise)
//   <dir>/.lock              held (flock) by the manager that owns the directory
//
// Multi-rank: every rank constructs a manager with the same options and calls
// the same methods at the same steps. Decisions that depend on a clock or a
// signal are made on the coordinator (rank 0) and broadcast; only the
// coordinator commits, records, renames, deletes and holds the lock. The
// manager's own rounds fail together: an error on any rank (the directory
// cannot be opened or listed, a pre-save callback or a state_dict() throws)
// is the same CheckpointError on every rank, at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "dcp/async_save.h"
#include "dcp/collectives.h"
#include "dcp/env.h"
#include "dcp/export.h"
#include "dcp/manager/options.h"
#include "dcp/storage.h"
#include "dcp/thread_annotations.h"
#include "dcp/value.h"

namespace dcp {
namespace manager {

// A committed checkpoint, from its directory and record.
struct DCP_MANAGER_EXPORT CheckpointInfo {
  int64_t step = 0;
  std::string path;
  double wall_time = 0;  // seconds since the epoch, when it was committed
  int world_size = 1;
  std::map<std::string, double> metrics;
};

// The steps of `committed` that `policy` keeps (the newest always).
DCP_MANAGER_EXPORT std::set<int64_t> steps_to_keep(const std::vector<CheckpointInfo>& committed,
                                                   const KeepPolicy& policy);

// The committed checkpoints in `dir`, oldest first. A step directory without
// metadata or without a valid record of its step is not committed and not
// listed. A directory that does not exist holds none; one that cannot be
// listed is a StorageError naming it. `env`: where the directory is
// (nullptr: the Env its scheme names, dcp::env_for).
DCP_MANAGER_EXPORT std::vector<CheckpointInfo> list_committed(const std::string& dir,
                                                              Env* env = nullptr);

// The dcp_manager.record of the checkpoint directory `path`: NotFoundError
// when it has none; CorruptionError when it does not parse, has a format
// version this build does not know, or (for a directory named step_N) is of
// another step. `env` as for list_committed.
DCP_MANAGER_EXPORT CheckpointInfo read_checkpoint_record(const std::string& path,
                                                         Env* env = nullptr);

// What one save cost.
struct DCP_MANAGER_EXPORT SaveStatistics {
  int64_t step = 0;
  bool async = false;
  double blocking_seconds = 0;  // the training loop waited this long
  double durable_seconds = 0;   // from the call until the checkpoint was committed
  uint64_t bytes = 0;
  double gbps = 0;        // bytes / durable_seconds
  double start_time = 0;  // seconds since the epoch, when the save was called
};

// A save budget's state (SavePolicy::max_overhead, mtbf_seconds), as the
// coordinator sees it: the others follow its decisions.
struct DCP_MANAGER_EXPORT BudgetState {
  int64_t interval = 0;     // steps between saves (0: none chosen yet, or no budget)
  double save_cost = -1;    // what a save costs the loop, seconds (moving average; -1: none yet)
  double step_seconds = 0;  // a training step (moving average; 0: not measured yet)
  int changes = 0;          // how often the interval was chosen or changed
};

class DCP_MANAGER_EXPORT CheckpointManager {
 public:
  // `collectives`: the group of the training ranks (null: one process).
  // `async_collectives`: a second group over the same ranks for async saves,
  // used only by their background thread (required when async saves are on
  // and there is more than one rank).
  // A directory that cannot be opened (another manager holds its lock: code
  // kConfig; it cannot be created or listed: kStorage) is a CheckpointError
  // on every rank. Inconsistent options are a ConfigError.
  explicit CheckpointManager(CheckpointManagerOptions options,
                             std::shared_ptr<Collectives> collectives = nullptr,
                             std::shared_ptr<Collectives> async_collectives = nullptr);
  // close(); never throws (a failure is logged).
  ~CheckpointManager();
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // Adds an object to every checkpoint, under `name`.
  void register_stateful(const std::string& name, std::shared_ptr<Stateful> object);

  // Loads the checkpoint the resume policy names into the registered objects
  // and returns its step; 0 when starting fresh (none to resume, `from:
  // none`, or a warm start from another run's path). Never starts fresh
  // silently when checkpoints exist but none loads, nor when the directory
  // cannot be listed: that is an error. Then moves aside what would collide
  // with this run's saves: checkpoints skipped by the fallback and step
  // directories that are not committed (.damaged.*), and with `from: <step>`
  // or `none` the committed checkpoints newer than where the run starts
  // (.superseded.*); see docs/MANAGER.md.
  int64_t resume();

  // Call after each training step. Saves when the policy says so (async when
  // configured) and returns true when the trainer should stop: a preemption
  // signal arrived, every rank agreed, and a synchronous checkpoint of
  // `step` was committed. Surfaces an async save's failure (on_error).
  bool on_step(int64_t step, const std::map<std::string, double>& metrics = {});

  // The end of training: saves `step` when `save.at_end` (synchronously),
  // then waits for everything in flight.
  void on_train_end(int64_t step, const std::map<std::string, double>& metrics = {});

  // Saves `step` now (async when configured). A step that is already
  // committed is skipped unless `force`, which replaces it.
  void save(int64_t step, bool force = false, const std::map<std::string, double>& metrics = {});

  // Waits for saves in flight; surfaces their failures (on_error).
  void wait();

  // wait(), stop the background deletions, restore signal handlers, release
  // the lock. Idempotent.
  void close();

  // Called before each save (training thread, inside a checked round with
  // the objects' state_dict(): one that throws on any rank fails that save on
  // every rank) and after each commit seen by this rank (training thread: at
  // the next on_step/wait for async saves).
  void add_pre_save_callback(std::function<void(int64_t step)> fn);
  void add_post_save_callback(std::function<void(const SaveStatistics&)> fn);

  // Wraps the storage writer of every save (timing, fault injection).
  using WriterWrapper =
      std::function<std::shared_ptr<StorageWriter>(std::shared_ptr<StorageWriter>)>;
  void set_writer_wrapper(WriterWrapper wrap);
  // Called as a save goes through its phases: "stage", "write", "metadata",
  // "record", "rename", "retention" (coordinator), from the thread doing it.
  void set_phase_callback(std::function<void(const char* phase, int64_t step)> fn);

  std::vector<SaveStatistics> statistics() const;
  // The save budget's interval and the measurements it follows from.
  BudgetState budget_state() const { return budget_; }
  std::vector<CheckpointInfo> committed() const { return list_committed(options_.dir, env_); }
  // A preemption signal was received by this process.
  bool signal_received() const;
  const CheckpointManagerOptions& options() const { return options_; }

  static std::string step_dir_name(int64_t step);

  struct Pending;        // a save in flight (manager.cpp)
  struct ResumeListing;  // what the coordinator found in the directory (resume.cpp)

 private:
  void open_directory();  // coordinator: create, lock, remove leftovers
  void release_lock();
  void restore_replaced();
  void start_save(int64_t step, bool async, bool force,
                  const std::map<std::string, double>& metrics);
  StateDict prepare_save(int64_t step);  // pre-save callbacks (checked), the state dict
  std::shared_ptr<StorageWriter> make_writer(int64_t step, uint64_t number, bool force,
                                             const std::map<std::string, double>& metrics,
                                             bool async);
  void committed_save(const SaveStatistics& st);  // statistics, log line, post-save callbacks
  int64_t resume_by_policy();                     // resume() but the reservation below
  // Async saves: the staging buffers of the registered objects, allocated
  // now (AsyncSaver::reserve) instead of by the first save. A failure is
  // logged (the first save allocates them then).
  void reserve_staging();
  int64_t resume_step(const ResumeListing& listing, int64_t step);
  int64_t resume_latest(const ResumeListing& listing);
  void move_aside_after_resume(const ResumeListing& listing, int64_t resumed,
                               const std::vector<int64_t>& skipped);
  void reap(bool wait_all);  // finished async saves: statistics, callbacks, errors
  void reap_oldest();        // waits for the oldest save in flight, then reap(false)
  void handle_error(const std::exception_ptr& e, int64_t step);
  // Coordinator: deletes (in the background) the .tmp directory of a save
  // that failed, so that its files do not hold disk space for the rest of
  // the run.
  void discard_failed_save(const std::string& tmp);
  std::string tmp_dir(int64_t step, uint64_t number) const;
  // `warm_start`: another run's checkpoint (or PyTorch's): resume.rename applies.
  bool load_from(const std::string& path, bool warm_start = false);
  StateDict build_state_dict(bool for_load) const;
  bool is_coordinator() const { return rank_ == 0; }
  int world_size() const;
  void phase(const char* name, int64_t step) const;
  bool has_budget() const {
    return options_.save.max_overhead > 0 || options_.save.mtbf_seconds > 0;
  }
  void measure_step(int64_t step);    // the step time since the last on_step
  void measure_save(double seconds);  // a save's cost to the loop; re-plans the interval
  void plan_interval();               // coordinator: the interval from the estimates
  bool budget_due(int64_t step);      // coordinator: the budget asks for a save of `step`

  CheckpointManagerOptions options_;
  std::shared_ptr<Collectives> coll_;
  std::shared_ptr<Collectives> async_coll_;
  int rank_ = 0;
  std::vector<std::pair<std::string, std::shared_ptr<Stateful>>> objects_;
  std::unique_ptr<AsyncSaver> saver_;
  std::vector<std::unique_ptr<Pending>> pending_;
  std::vector<std::function<void(int64_t)>> pre_save_;
  std::vector<std::function<void(const SaveStatistics&)>> post_save_;
  WriterWrapper wrap_writer_;
  std::function<void(const char*, int64_t)> phase_fn_;
  mutable Mutex stats_mu_;
  std::vector<SaveStatistics> stats_ DCP_GUARDED_BY(stats_mu_);
  std::chrono::steady_clock::time_point last_save_time_;
  int64_t last_saved_step_ = -1;
  BudgetState budget_;
  int64_t steps_measured_ = 0;  // samples of the step time
  int64_t last_step_ = -1;      // the step of the last on_step (-1: none yet)
  std::chrono::steady_clock::time_point last_step_start_;  // when that on_step began
  double saved_since_step_ = 0;     // seconds saves took since then (on_step, save())
  uint64_t save_counter_ = 0;       // names temporary directories; the same on every rank
  Env* env_ = nullptr;              // options_.env, or the one options_.dir names
  std::unique_ptr<FileLock> lock_;  // coordinator: <dir>/.lock
  bool signals_installed_ = false;
  bool closed_ = false;
  struct Deleter;
  std::shared_ptr<Deleter> deleter_;
};

}  // namespace manager
}  // namespace dcp
