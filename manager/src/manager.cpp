// The CheckpointManager.
//
// Commit protocol of one checkpoint of step N (the coordinator runs steps 4-7
// inside the save's last collective round, so when save() returns on any
// rank, the checkpoint is committed):
//   1. Every rank writes its data files into <dir>/.tmp.step_N.<k> (k counts
//      this manager's saves, so a retried save never meets an old attempt).
//   2. Each data file is fdatasync'd and closed (dcp's file-system writer).
//   3. The coordinator writes .metadata.tmp, fdatasyncs it, renames it to
//      .metadata and fsyncs the directory (dcp's writer: finish()).
//   4. The coordinator writes dcp_manager.record (step, metrics, wall time,
//      world size, format version) into the same directory, fdatasyncs it and
//      fsyncs the directory.
//   5. It renames .tmp.step_N.<k> to step_N. An existing step_N that is a
//      committed checkpoint is an AlreadyExistsError (with `force` it is first
//      renamed to .replaced.step_N.<k>, put back if the commit fails, deleted
//      only once step 6 is done; start-up puts it back after a crash when no
//      step_N is committed); one that is not committed (no .metadata, no
//      valid record) is moved aside to .damaged.step_N.<k> first.
//   6. It fsyncs <dir>. The checkpoint is committed: resume and retention see
//      only step_N directories that hold both .metadata and a valid record
//      of step N.
//   7. Retention: checkpoints the policy does not keep are renamed to .old.*
//      (atomically invisible) and deleted by a background thread; a deletion
//      error is logged, not fatal. The newest committed checkpoint is always
//      kept; saves in flight are .tmp.* directories, which retention never sees.
//      .damaged.* and .superseded.* directories (resume.cpp) of earlier steps
//      are removed the same way.
// A crash at any point leaves either a committed step_N or a .tmp/.old
// directory, which the next manager removes at start-up.
//
// The manager's own collective rounds (opening the directory, the per-step
// decision, the pre-save callbacks, the resume listing) go through
// dcp's checked rounds (dcp/collectives.h): a failure on any rank is thrown
// as the same CheckpointError on every rank, at once.
#include "dcp/manager/manager.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <thread>

#include "commit.h"
#include "dcp/checkpoint.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/logging.h"
#include "dcp/thread_annotations.h"
#include "directory.h"
#include "signals.h"
#include "stats_file.h"

namespace dcp {
namespace manager {

using Clock = std::chrono::steady_clock;

using internal::CommitContext;
using internal::g_signal;
using internal::install_signals;
using internal::restore_signals;

using internal::commit_problem;
using internal::entries;
using internal::exists;
using internal::fsync_dir;
using internal::kDamaged;
using internal::kRecordName;
using internal::move_aside;
using internal::record_text;
using internal::rename_or_throw;
using internal::retain;
using internal::write_durably;

// ---- background deletion ------------------------------------------------------

struct CheckpointManager::Deleter {
  Mutex mu;
  CondVar cv;
  std::deque<std::string> queue DCP_GUARDED_BY(mu);
  bool stop DCP_GUARDED_BY(mu) = false;
  std::thread thread;

  explicit Deleter(Env* env) {
    thread = std::thread([this, env] {
      for (;;) {
        std::string path;
        {
          MutexLock lock(mu);
          while (!stop && queue.empty()) cv.wait(mu);
          if (queue.empty()) return;
          path = std::move(queue.front());
          queue.pop_front();
        }
        try {
          env->remove_dir_recursively(env_path(path));
        } catch (const std::exception& e) {
          logger().warn("cannot delete '{}' in the background (the next start-up removes it): {}",
                        path, e.what());
        }
      }
    });
  }
  void push(std::string path) {
    {
      MutexLock lock(mu);
      queue.push_back(std::move(path));
    }
    cv.notify_one();
  }
  void finish() {
    {
      MutexLock lock(mu);
      stop = true;
    }
    cv.notify_one();
    if (thread.joinable()) thread.join();
  }
};

// ---- log lines -----------------------------------------------------------------

namespace {

// "70.1 KiB", "1.20 GiB".
std::string size_text(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", bytes)
                : fmt::format("{:.{}f} {}", v, v < 10 ? 2 : 1, units[u]);
}

std::string ms_text(double seconds) {
  const double ms = seconds * 1e3;
  return fmt::format("{:.{}f} ms", ms, ms < 10 ? 2 : ms < 100 ? 1 : 0);
}

// The throughput is shown from kRateBytes written on: below, fixed costs
// (fsync, metadata, the record, renames) dominate and a rate says nothing
// of the storage.
constexpr uint64_t kRateBytes = 64ull << 20;

// The one line per committed save: at info on the coordinator, at debug on
// the other ranks (each rank sees each commit).
void log_committed(const SaveStatistics& st, bool coordinator) {
  std::string line =
      fmt::format("checkpoint of step {} committed{}: {} blocking, {} until durable, {}", st.step,
                  st.async ? " (async)" : "", ms_text(st.blocking_seconds),
                  ms_text(st.durable_seconds), size_text(st.bytes));
  if (st.bytes >= kRateBytes && st.gbps > 0) line += fmt::format(", {:.2f} GB/s", st.gbps);
  logger().log(coordinator ? spdlog::level::info : spdlog::level::debug, "{}", line);
}

}  // namespace

// ---- the manager ---------------------------------------------------------------

struct CheckpointManager::Pending {
  int64_t step = 0;
  AsyncSaveHandle handle;
  std::shared_ptr<SaveStats> stats;
  double blocking = 0;
  Clock::time_point start;
  int64_t prev_saved_step = -1;  // last_saved_step_ before this save
  std::string tmp;               // its .tmp directory
};

std::string CheckpointManager::step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%010lld", static_cast<long long>(step));
  return buf;
}

CheckpointManager::CheckpointManager(CheckpointManagerOptions options,
                                     std::shared_ptr<Collectives> collectives,
                                     std::shared_ptr<Collectives> async_collectives)
    : options_(std::move(options)),
      coll_(std::move(collectives)),
      async_coll_(std::move(async_collectives)) {
  validate(options_);
  if (!options_.log.level.empty()) logger().set_level(spdlog::level::from_str(options_.log.level));
  env_ = internal::env_of(options_.env, options_.dir);
  if (coll_) rank_ = coll_->rank();
  if (options_.dir.empty()) throw ConfigError("checkpoint.dir: must not be empty");
  if (options_.async.enabled && world_size() > 1 && !async_coll_)
    throw ConfigError("async saves on " + std::to_string(world_size()) +
                      " ranks need a process group of their own (async_collectives)");
  // The coordinator opens the directory; a failure there (the lock is held,
  // the path is a file) is every rank's CheckpointError, at once.
  try {
    checked_all_ranks(coll_, "opening checkpoint directory '" + options_.dir + "'", "open", [&] {
      if (is_coordinator()) open_directory();
    });
  } catch (...) {
    release_lock();
    throw;
  }
  deleter_ = std::make_shared<Deleter>(env_);
  if (options_.async.enabled) {
    AsyncSaverOptions ao;
    ao.max_in_flight = options_.async.max_in_flight;
    ao.stager.threads = options_.storage.threads;
    saver_ = std::make_unique<AsyncSaver>(ao);
  }
  if (!options_.save.on_signals.empty()) {
    install_signals(options_.save.on_signals);
    signals_installed_ = true;
  }
  last_save_time_ = Clock::now();
}

void CheckpointManager::open_directory() {
  const std::string dir = env_path(options_.dir);
  try {
    env_->create_dirs_durably(dir, options_.storage.fsync);
  } catch (const Error& e) {
    const auto* se = dynamic_cast<const StorageError*>(&e);
    const int err = se ? se->error_number() : 0;
    throw StorageError("cannot create checkpoint directory '" + options_.dir +
                           "': " + (err ? errno_text(err) : std::string(e.what())),
                       err);
  }
  const std::string lock_path = options_.dir + "/.lock";
  lock_ = env_->lock_file(env_path(lock_path));
  if (!lock_) {
    std::string holder;
    try {
      holder = env_->read_file(env_path(lock_path));
    } catch (const Error&) {
    }
    holder = holder.substr(0, holder.find('\n'));
    throw ConfigError("checkpoint directory '" + options_.dir +
                      "' is in use by another CheckpointManager" +
                      (holder.empty() ? "" : " (pid " + holder + ")") + "; lock file " + lock_path);
  }
  try {
    internal::write_durably(env_, lock_path, std::to_string(::getpid()) + "\n", false);
  } catch (const Error& e) {
    logger().debug("cannot write the pid into '{}' (the lock is held): {}", lock_path, e.what());
  }
  restore_replaced();
  // Leftovers of saves and deletions that a crash interrupted. Directories
  // moved aside (.damaged.*, .superseded.*) stay: retention removes them.
  for (const auto& name : entries(env_, options_.dir))
    if (name.rfind(".tmp.", 0) == 0 || name.rfind(".old.", 0) == 0) {
      try {
        env_->remove_dir_recursively(env_path(options_.dir + "/" + name));
        logger().info("removed leftover '{}' of an interrupted save", name);
      } catch (const std::exception& e) {
        logger().warn("cannot remove leftover '{}': {}", name, e.what());
      }
    }
}

// A crash during a forced save of step N (save(N, force)) can leave the
// committed step_N it was replacing set aside as .replaced.step_N.<k>, and
// no step_N: put it back. When a step_N is committed (the new one), the
// set-aside one is removed. The newest (largest <k>) is the one put back.
void CheckpointManager::restore_replaced() {
  const std::string prefix = internal::kReplacedPrefix;
  std::vector<std::pair<uint64_t, std::string>> found;
  for (const auto& name : entries(env_, options_.dir)) {
    if (name.rfind(prefix, 0) != 0) continue;
    const size_t dot = name.rfind('.');
    uint64_t k = 0;
    try {
      k = std::stoull(name.substr(dot + 1));
    } catch (const std::exception&) {
    }
    found.emplace_back(k, name);
  }
  std::sort(found.rbegin(), found.rend());
  for (const auto& [k, name] : found) {
    const std::string step_name =
        name.substr(prefix.size(), name.rfind('.') - prefix.size());  // step_N
    const std::string path = options_.dir + "/" + name;
    const std::string final_path = options_.dir + "/" + step_name;
    try {
      CheckpointInfo info;
      const int64_t step = step_name.rfind("step_", 0) == 0 ? std::stoll(step_name.substr(5)) : -1;
      const bool committed = internal::exists(env_, final_path) &&
                             internal::commit_problem(env_, final_path, step, info).empty();
      if (committed) {
        env_->remove_dir_recursively(env_path(path));
        logger().info("removed '{}': the forced save that replaced it committed", name);
        continue;
      }
      if (internal::exists(env_, final_path))
        internal::move_aside(env_, options_.dir, step_name, internal::kDamaged, true);
      internal::rename_or_throw(env_, path, final_path);
      internal::fsync_dir(env_, options_.dir);
      logger().warn("put '{}' back as '{}': the forced save replacing it did not commit", name,
                    step_name);
    } catch (const std::exception& e) {
      logger().warn("cannot restore '{}': {}", name, e.what());
    }
  }
}

void CheckpointManager::release_lock() { lock_.reset(); }

CheckpointManager::~CheckpointManager() {
  try {
    close();
  } catch (const std::exception& e) {
    logger().error("CheckpointManager: {}", e.what());
  }
}

int CheckpointManager::world_size() const { return coll_ ? coll_->world_size() : 1; }

void CheckpointManager::phase(const char* name, int64_t step) const {
  if (phase_fn_) phase_fn_(name, step);
}

void CheckpointManager::register_stateful(const std::string& name,
                                          std::shared_ptr<Stateful> object) {
  if (name.empty() || !object)
    throw InvalidArgumentError("register_stateful needs a name and an object");
  for (const auto& o : objects_)
    if (o.first == name) throw InvalidArgumentError("'" + name + "' is registered twice");
  objects_.emplace_back(name, std::move(object));
}

StateDict CheckpointManager::build_state_dict(bool for_load) const {
  StateDict sd;
  for (const auto& [name, obj] : objects_) {
    if (for_load && std::find(options_.resume.exclude.begin(), options_.resume.exclude.end(),
                              name) != options_.resume.exclude.end())
      continue;
    sd.emplace(name, Value(obj));
  }
  return sd;
}

StateDict CheckpointManager::prepare_save(int64_t step) {
  // The pre-save callbacks run in a checked round: one that throws on any
  // rank fails this save on every rank, before any rank writes or stages.
  // The objects' state_dict() runs inside the save's own first round
  // (dcp::save, AsyncSaver::save), under the same discipline.
  if (!pre_save_.empty())
    checked_all_ranks(coll_, "checkpoint of step " + std::to_string(step), "pre_save", [&] {
      for (auto& fn : pre_save_) fn(step);
    });
  return build_state_dict(false);
}

std::shared_ptr<StorageWriter> CheckpointManager::make_writer(
    int64_t step, uint64_t number, bool force, const std::map<std::string, double>& metrics,
    bool async) {
  CommitContext ctx;
  ctx.env = env_;
  ctx.dir = options_.dir;
  ctx.tmp = tmp_dir(step, number);
  ctx.final_path = options_.dir + "/" + step_dir_name(step);
  ctx.step = step;
  ctx.force = force;
  ctx.sync = options_.storage.fsync;
  ctx.world_size = world_size();
  ctx.metrics = metrics;
  ctx.keep = options_.keep;
  ctx.phase = [fn = phase_fn_](const char* p, int64_t s) {
    if (fn) fn(p, s);
  };
  std::weak_ptr<Deleter> deleter = deleter_;
  ctx.delete_later = [deleter, env = env_](std::string path) {
    if (auto d = deleter.lock())
      d->push(std::move(path));
    else
      env->remove_dir_recursively(env_path(path));
  };
  ctx.save_number = number;
  FileSystemWriterOptions wo;
  wo.threads = options_.storage.threads;
  wo.sync_files = options_.storage.fsync;
  wo.format = options_.storage.format;
  wo.pytorch_version = options_.storage.pytorch_version;
  wo.env = env_;
  if (async) {
    wo.threads = options_.async.writer_threads;
    wo.direct_io = options_.async.direct_io;
  }
  const std::string tmp = ctx.tmp;
  std::shared_ptr<StorageWriter> writer =
      internal::make_commit_writer(make_filesystem_writer(tmp, wo), std::move(ctx));
  return wrap_writer_ ? wrap_writer_(writer) : writer;
}

void CheckpointManager::start_save(int64_t step, bool async, bool force,
                                   const std::map<std::string, double>& metrics) {
  // The step this run saved or resumed from is committed already. (A step
  // committed by another run in the same directory makes the commit fail
  // with AlreadyExistsError, on every rank.)
  if (!force && step == last_saved_step_) return;
  const Clock::time_point entered = Clock::now();  // what the loop loses starts here
  // With max_in_flight saves pending, the oldest must finish first (its
  // failure surfaces here), so that "stage" below is when staging starts.
  if (async && saver_)
    while (static_cast<int>(pending_.size()) >= options_.async.max_in_flight) reap_oldest();
  const uint64_t number = save_counter_++;
  auto pending = std::make_unique<Pending>();
  pending->step = step;
  pending->stats = std::make_shared<SaveStats>();
  pending->start = Clock::now();
  last_save_time_ = Clock::now();
  // A failed save puts it back (here, or in reap() for an async one): the
  // step is not committed, and saving it again must not be skipped.
  pending->prev_saved_step = last_saved_step_;
  pending->tmp = tmp_dir(step, number);
  last_saved_step_ = step;
  SaveOptions so;
  so.stats = pending->stats.get();
  SavePlannerOptions po;
  po.check_replicas = options_.storage.check_replicas;
  so.planner = std::make_shared<DefaultSavePlanner>(po);
  StateDict sd;
  try {
    sd = prepare_save(step);
    phase("stage", step);
    so.storage_writer = make_writer(step, number, force, metrics, async && saver_);
    if (async && saver_) {
      so.collectives = async_coll_;
      pending->handle = saver_->save(sd, so);
    } else {
      so.collectives = coll_;
      dcp::save(sd, so);
    }
  } catch (...) {
    last_saved_step_ = pending->prev_saved_step;
    discard_failed_save(pending->tmp);
    handle_error(std::current_exception(), step);
    return;
  }
  measure_save(std::chrono::duration<double>(Clock::now() - entered).count());
  if (async && saver_) {
    pending->blocking = std::chrono::duration<double>(Clock::now() - pending->start).count();
    pending_.push_back(std::move(pending));
    return;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - pending->start).count();
  committed_save({step, false, secs, secs, pending->stats->bytes,
                  secs > 0 ? pending->stats->bytes / secs / 1e9 : 0,
                  internal::wall_time_at(pending->start)});
}

void CheckpointManager::committed_save(const SaveStatistics& st) {
  {
    MutexLock lock(stats_mu_);
    stats_.push_back(st);
  }
  if (is_coordinator()) internal::append_save_statistics(env_, options_.dir, st);
  log_committed(st, is_coordinator());
  for (auto& fn : post_save_) fn(st);
}

std::string CheckpointManager::tmp_dir(int64_t step, uint64_t number) const {
  return options_.dir + "/.tmp." + step_dir_name(step) + "." + std::to_string(number);
}

void CheckpointManager::discard_failed_save(const std::string& tmp) {
  if (!is_coordinator() || !deleter_) return;
  try {
    if (!env_->dir_exists(env_path(tmp))) return;  // it failed before writing
  } catch (const std::exception& e) {
    logger().debug("cannot look for '{}' of a failed save: {}", tmp, e.what());
    return;
  }
  deleter_->push(tmp);  // what it leaves is removed at the next start-up
}

void CheckpointManager::handle_error(const std::exception_ptr& e, int64_t step) {
  if (options_.on_error == OnError::kRaise) std::rethrow_exception(e);
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    logger().warn("checkpoint of step {} failed (on_error: warn, training goes on): {}", step,
                  ex.what());
  }
}

void CheckpointManager::reap_oldest() {
  if (pending_.empty()) return;
  pending_.front()->handle.wait();
  reap(false);
}

void CheckpointManager::reap(bool wait_all) {
  std::exception_ptr first;
  int64_t first_step = 0;
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& p = **it;
    if (!wait_all && !p.handle.ready()) {
      ++it;
      continue;
    }
    try {
      p.handle.get();
      const double durable = p.blocking + p.stats->total_seconds;
      committed_save({p.step, true, p.blocking, durable, p.stats->bytes,
                      durable > 0 ? p.stats->bytes / durable / 1e9 : 0,
                      internal::wall_time_at(p.start)});
    } catch (...) {
      if (last_saved_step_ == p.step) last_saved_step_ = p.prev_saved_step;
      discard_failed_save(p.tmp);
      if (!first) first = std::current_exception(), first_step = p.step;
    }
    it = pending_.erase(it);
  }
  if (first) handle_error(first, first_step);
}

bool CheckpointManager::on_step(int64_t step, const std::map<std::string, double>& metrics) {
  if (closed_) throw InvalidArgumentError("on_step() after close()");
  measure_step(step);
  reap(false);
  const SavePolicy& s = options_.save;
  bool due = (s.every_steps > 0 && step > 0 && step % s.every_steps == 0) ||
             std::find(s.at_steps.begin(), s.at_steps.end(), step) != s.at_steps.end();
  bool stop = false;
  if (!s.on_signals.empty() || s.every_seconds > 0 || has_budget()) {
    // The clock, the budget and the signals are read on the coordinator
    // (signals from every rank), and its decision is everyone's.
    auto time_due = [&] {
      return s.every_seconds > 0 &&
             std::chrono::duration<double>(Clock::now() - last_save_time_).count() >=
                 s.every_seconds;
    };
    // One checked round: every rank's signal flag, and the coordinator's clock.
    const auto flags =
        checked_all_gather(coll_, "on_step", "step " + std::to_string(step) + " decision", [&] {
          std::string f = "00";
          if (g_signal != 0) f[0] = '1';
          if (is_coordinator() && (time_due() || budget_due(step))) f[1] = '1';
          return f;
        });
    for (const auto& f : flags) stop = stop || (!f.empty() && f[0] == '1');
    due = due || (flags.at(0).size() == 2 && flags[0][1] == '1');
  }
  if (stop) {
    logger().warn("{} received: saving step {} and stopping",
                  signal_name(g_signal ? g_signal : SIGTERM), step);
    reap(true);  // the async saves in flight finish first
    start_save(step, /*async=*/false, /*force=*/false, metrics);
    return true;
  }
  if (due) start_save(step, options_.async.enabled, false, metrics);
  return false;
}

// ---- the save budget (docs/MANAGER.md "An interval from a budget") ------------------

namespace {
constexpr int64_t kWarmupSteps = 3;  // step times measured before a first save measures its cost
constexpr double kStepWeight = 0.2;  // of a new sample in the step time's moving average
constexpr double kSaveWeight = 0.5;  // of a new sample in the save cost's
constexpr double kHysteresis = 0.2;  // a new interval within 20% of the current one is not taken
}  // namespace

void CheckpointManager::measure_step(int64_t step) {
  // The wall time per step between on_step calls, without what saves took:
  // waiting for slower ranks (here in the decision round, or in the
  // trainer's own collectives) is part of a step.
  const Clock::time_point now = Clock::now();
  if (has_budget() && last_step_ >= 0 && step > last_step_) {
    const double t = std::max(0.0, std::chrono::duration<double>(now - last_step_start_).count() -
                                       saved_since_step_) /
                     double(step - last_step_);
    budget_.step_seconds =
        steps_measured_ == 0 ? t : (1 - kStepWeight) * budget_.step_seconds + kStepWeight * t;
    ++steps_measured_;
  }
  last_step_ = step;
  last_step_start_ = now;
  saved_since_step_ = 0;
}

void CheckpointManager::measure_save(double seconds) {
  if (!has_budget()) return;
  saved_since_step_ += seconds;
  budget_.save_cost = budget_.save_cost < 0
                          ? seconds
                          : (1 - kSaveWeight) * budget_.save_cost + kSaveWeight * seconds;
  if (steps_measured_ > 0) plan_interval();
}

void CheckpointManager::plan_interval() {
  if (!is_coordinator()) return;  // the coordinator decides
  const BudgetInterval b =
      interval_from_budget(options_.save, budget_.save_cost, budget_.step_seconds);
  const int64_t old = budget_.interval;
  if (old > 0 && std::abs(double(b.steps - old)) <= kHysteresis * double(old)) return;
  budget_.interval = b.steps;
  ++budget_.changes;
  if (old == 0)
    logger().info("save interval: every {} steps: {}", b.steps, b.reason);
  else
    logger().info("save interval: every {} steps (was {}): {}", b.steps, old, b.reason);
}

bool CheckpointManager::budget_due(int64_t step) {
  if (!has_budget() || step <= 0) return false;
  // A save (at_steps, say) measured the cost before the step time was known.
  if (budget_.interval == 0 && budget_.save_cost >= 0 && steps_measured_ > 0) plan_interval();
  if (budget_.interval == 0) {
    // Nothing chosen yet: once the step time is known, a save measures the cost.
    if (steps_measured_ < kWarmupSteps) return false;
    logger().info("save interval: a first save, of step {}, measures what a save costs", step);
    return true;
  }
  return step - std::max<int64_t>(last_saved_step_, 0) >= budget_.interval;
}

void CheckpointManager::on_train_end(int64_t step, const std::map<std::string, double>& metrics) {
  reap(true);
  if (options_.save.at_end) start_save(step, /*async=*/false, false, metrics);
  wait();
}

void CheckpointManager::save(int64_t step, bool force,
                             const std::map<std::string, double>& metrics) {
  reap(false);
  start_save(step, options_.async.enabled, force, metrics);
}

void CheckpointManager::wait() { reap(true); }

void CheckpointManager::close() {
  if (closed_) return;
  closed_ = true;
  std::exception_ptr error;
  try {
    reap(true);
  } catch (...) {
    error = std::current_exception();
  }
  saver_.reset();
  if (deleter_) deleter_->finish();
  if (signals_installed_) restore_signals();
  signals_installed_ = false;
  release_lock();
  if (error) std::rethrow_exception(error);
}

void CheckpointManager::add_pre_save_callback(std::function<void(int64_t)> fn) {
  pre_save_.push_back(std::move(fn));
}
void CheckpointManager::add_post_save_callback(std::function<void(const SaveStatistics&)> fn) {
  post_save_.push_back(std::move(fn));
}
void CheckpointManager::set_writer_wrapper(WriterWrapper wrap) { wrap_writer_ = std::move(wrap); }
void CheckpointManager::set_phase_callback(std::function<void(const char*, int64_t)> fn) {
  phase_fn_ = std::move(fn);
}

std::vector<SaveStatistics> CheckpointManager::statistics() const {
  MutexLock lock(stats_mu_);
  return stats_;
}

bool CheckpointManager::signal_received() const { return g_signal != 0; }

}  // namespace manager
}  // namespace dcp
