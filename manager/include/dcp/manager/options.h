// The CheckpointManager's policy: when to save, how, what to keep, how to
// resume. Plain structs with documented defaults and ranges;
// load_manager_options() reads them from YAML (configs/default.yaml
// documents every key) and validate() checks a struct built in code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dcp/default_planner.h"
#include "dcp/export.h"
#include "dcp/filesystem.h"
#include "dcp/replicas.h"

namespace dcp {
class Env;  // dcp/env.h

namespace manager {

// Upper bounds of the ranges below (validate() refuses anything outside a range).
inline constexpr int kMaxAsyncInFlight = 64;     // async.max_in_flight: 1..64
inline constexpr int kMaxStorageThreads = 1024;  // storage.threads: 1..1024

struct DCP_MANAGER_EXPORT SavePolicy {
  // Save when step % every_steps == 0 (steps > 0). 0 turns the rule off.
  // Default 1000; 0..INT64_MAX. With a budget (max_overhead, mtbf_seconds)
  // the YAML default is 0 (off); a value given still saves as well. Code
  // that sets a budget sets every_steps = 0 itself unless it wants both.
  int64_t every_steps = 1000;
  // A budget: the manager measures the step time and what a save costs the
  // training loop (its blocking time; a synchronous save blocks for its
  // whole duration) as the run goes, and picks the step interval
  // (interval_from_budget below; docs/MANAGER.md "An interval from a
  // budget"), logging each change with its reason.
  //
  // The fraction of wall time the loop may lose to saving: the interval is
  // at least cost * (1 - f) / (f * step time) steps. 0 (default): off;
  // else in (0, 1).
  double max_overhead = 0;
  // The mean time between failures of the job, in seconds: Young/Daly's
  // interval, sqrt(2 * cost * mtbf) of training time (never shorter than
  // what max_overhead allows when both are set). 0 (default): off; finite.
  double mtbf_seconds = 0;
  // Save when this many seconds passed since the last save (decided on the
  // coordinator). 0 (default) turns the rule off. Finite, >= 0.
  double every_seconds = 0;
  // Save at exactly these steps as well (each 1..INT64_MAX).
  std::vector<int64_t> at_steps;
  // Save (synchronously) in on_train_end(). Default true.
  bool at_end = true;
  // Signals that ask for a final synchronous save and a stop at the next
  // on_step (preemption). Default SIGTERM and SIGUSR1. Empty: no handlers.
  // Only the signals signal_from_name() knows.
  std::vector<int> on_signals;
  SavePolicy();
};

struct DCP_MANAGER_EXPORT AsyncPolicy {
  // Periodic saves run in the background (dcp::AsyncSaver): training blocks
  // only for the copy to staging memory. Default true.
  bool enabled = true;
  // Async saves staged but not committed at once; each holds a copy of the
  // state in memory. Default 1; 1..kMaxAsyncInFlight (64).
  int max_in_flight = 1;
  // The data files of async saves are written with O_DIRECT
  // (FileSystemWriterOptions::direct_io): no page-cache copy, so less of
  // the trainer's CPU; same files. Default true. Synchronous saves (at the
  // end, on a signal) write through the page cache as before.
  bool direct_io = true;
  // Writer threads of async saves (FileSystemWriterOptions::threads; the
  // staging copy uses storage.threads). Default 1: one background thread
  // next to the trainer. 1..kMaxStorageThreads (1024).
  int writer_threads = 1;
};

struct DCP_MANAGER_EXPORT BestPolicy {
  // The metric (a key of the metrics given to on_step) that ranks
  // checkpoints; empty (default): the rule is off.
  std::string metric;
  // "min" (default: lower is better) or "max".
  bool maximize = false;
  // How many of the best to keep. Default 0 (off); 0..INT_MAX; > 0 needs
  // a metric.
  int count = 0;
};

// Retention: every rule adds to what is kept; the newest committed checkpoint
// is always kept and a save in flight is never touched.
struct DCP_MANAGER_EXPORT KeepPolicy {
  // The newest `last` committed checkpoints. 0 keeps every checkpoint
  // (nothing is deleted). Default 3; 0..INT_MAX.
  int last = 3;
  // Every checkpoint whose step is a multiple of this. 0 (default): off;
  // 0..INT64_MAX.
  int64_t every_steps = 0;
  // One checkpoint per this many seconds of wall time. 0 (default): off.
  // Finite, >= 0.
  double every_seconds = 0;
  BestPolicy best;
};

struct DCP_MANAGER_EXPORT ResumePolicy {
  // "latest" (default): the newest committed checkpoint that loads; "none":
  // start fresh; a step number (digits, 0..INT64_MAX): that checkpoint (an
  // error if it does not exist); a path: warm-start from another run's
  // checkpoint when this run has none yet. Not empty; a signed number
  // ("-5") is refused, not taken for a path.
  std::string from = "latest";
  // Keys of the checkpoint and of the registered objects must match
  // exactly. Default true.
  bool strict = true;
  // Registered names or flat keys ("model.fc1.weight") not to load.
  std::vector<std::string> exclude;
  // With "latest": a checkpoint that does not load (corrupt, incomplete) is
  // skipped with a warning and the next older one is tried. Default true.
  bool fallback_to_older = true;
  // For a warm start from a path only (its names may be another program's:
  // a PyTorch DCP directory, a torch.save file, safetensors): checkpoint
  // names onto the registered ones (dcp::KeyRename; e.g. {"", "model."}
  // loads a torch.save(model.state_dict()) file into the object registered
  // as "model"). The run's own checkpoints are loaded without it. Default:
  // none. `exclude` names keys after the mapping.
  std::vector<KeyRename> rename;
  // A warm start skips values dcp++ cannot represent (a Python object of
  // another class, an int beyond 64 bits) instead of failing on them,
  // listing them in a warning. Default false.
  bool skip_unreadable = false;
};

struct DCP_MANAGER_EXPORT StoragePolicy {
  int threads = 2;               // writer/reader threads. Default 2; 1..kMaxStorageThreads (1024).
  bool fsync = true;             // fdatasync data and metadata. Default true.
  bool verify_checksums = true;  // check every item on load. Default true.
  // Copies of a replicated item that differ between ranks (dcp/replicas.h):
  // error (default), warn or off. Given to the save planner.
  ReplicaCheck check_replicas = ReplicaCheck::kError;
  // What the checkpoints are written in (FileSystemWriterOptions::format):
  // dcp++ (default) or pytorch-dcp, which Python's torch.distributed.
  // checkpoint loads. Resume reads either.
  StorageFormat format = StorageFormat::kDcp;
  // With pytorch-dcp: "2" (default) or "1.13" (FileSystemWriterOptions::
  // pytorch_version).
  std::string pytorch_version = "2";
};

struct DCP_MANAGER_EXPORT LogPolicy {
  // The level of dcp++'s logger (dcp/logging.h) from the manager's
  // construction on: trace, debug, info, warn, error, critical or off.
  // Empty (default): left as it is (info, or $DCP_LOG_LEVEL). At info the
  // manager logs one line per committed save (on the coordinator only) and
  // what is rare (a resume, a leftover removed, a failure, a change of the
  // budget's interval); everything else of a save is at debug.
  // $DCP_LOG_LEVEL overrides it (apply_environment).
  std::string level;
};

enum class OnError {
  kRaise,  // a failed save is thrown (an async one at the next on_step/wait)
  kWarn,   // logged; training carries on
};

struct DCP_MANAGER_EXPORT CheckpointManagerOptions {
  // Where the run's checkpoints go: <dir>/step_<N> when committed. Default
  // "checkpoints"; not empty. $DCP_CHECKPOINT_DIR overrides it
  // (load_manager_options).
  // "memory://name/run" keeps them in the in-memory store (memory_env()).
  std::string dir = "checkpoints";
  // Where every file operation of the manager goes (listing, the lock, the
  // records, renames, deletions, and the checkpoints' own files); nullptr
  // (default): the Env `dir`'s scheme names, posix_env() or memory_env().
  // Not owned; it must outlive the manager. Not a YAML key.
  Env* env = nullptr;
  SavePolicy save;
  AsyncPolicy async;
  KeepPolicy keep;
  ResumePolicy resume;
  StoragePolicy storage;
  LogPolicy log;
  OnError on_error = OnError::kRaise;
};

// The step interval a save budget asks for, given what a save costs the
// training loop (seconds) and the time of a step (seconds).
struct DCP_MANAGER_EXPORT BudgetInterval {
  int64_t steps = 0;             // the interval (>= 1); 0: no budget, or costs unknown
  int64_t overhead_steps = 0;    // the fewest steps max_overhead allows (0: not set)
  int64_t young_daly_steps = 0;  // Young/Daly's interval (0: mtbf_seconds not set)
  std::string reason;            // how `steps` follows from the costs, for the log
};
// overhead_steps = ceil(cost * (1 - f) / (f * step)) for f = max_overhead
// (then cost / (steps * step + cost) <= f); young_daly_steps =
// round(sqrt(2 * cost * mtbf) / step); steps = the larger of the two set,
// at least 1.
DCP_MANAGER_EXPORT BudgetInterval interval_from_budget(const SavePolicy& policy,
                                                       double save_cost_seconds,
                                                       double step_seconds);

// Throws ConfigError ("checkpoint.storage.threads: must be in 1..1024, not
// 0") for the first field outside its documented range above, an unknown
// signal or enum value, or best.count > 0 without a metric. The
// CheckpointManager calls it before it touches the directory; the loaders
// below apply the same checks.
DCP_MANAGER_EXPORT void validate(const CheckpointManagerOptions& options);

// Reads the `checkpoint:` section of a YAML file (configs/default.yaml shows
// every key). A ConfigError naming the file, the line and the key, before
// anything is used: a path that is not a readable regular file, invalid
// YAML (an unterminated quote or bracket too), more than one document, a
// duplicate key in any mapping, a key that is not a plain string, an
// unknown key, a wrong type (booleans are true or false only; numbers are
// plain decimal, not quoted), a number outside the field's range (see
// validate()), a non-finite number of seconds. Then applies the environment
// (see apply_environment).
DCP_MANAGER_EXPORT CheckpointManagerOptions load_manager_options(const std::string& path);
// The same from YAML text; `source` names it in errors. No environment.
DCP_MANAGER_EXPORT CheckpointManagerOptions parse_manager_options(const std::string& yaml,
                                                                  const std::string& source);
// Applies $DCP_CHECKPOINT_DIR (replaces `dir`), $DCP_RESUME_FROM
// (replaces `resume.from`) and $DCP_LOG_LEVEL (replaces `log.level`) when
// set and not empty; a value that validate()
// would refuse is a ConfigError naming the variable.
DCP_MANAGER_EXPORT void apply_environment(CheckpointManagerOptions& options);

// "SIGTERM" <-> SIGTERM for the signals the manager accepts.
DCP_MANAGER_EXPORT int signal_from_name(const std::string& name);
DCP_MANAGER_EXPORT std::string signal_name(int signal);

}  // namespace manager
}  // namespace dcp
