// The checkpoint directory of a CheckpointManager, as the manager's sources
// share it (not installed): file operations through an Env, the record format, what a
// step_N directory is, moving a directory aside, retention.
//
// Names in <dir>:
//   step_<N, 10 digits>     a checkpoint; committed when it holds .metadata and
//                           a valid dcp_manager.record of step N
//   .tmp.step_N.<k>         a save in progress (removed at start-up)
//   .old.*                  being deleted (removed at start-up)
//   .replaced.step_N.<k>    a committed step_N that a forced save of step N
//                           set aside until its own step_N is durable; at
//                           start-up put back if no step_N is committed,
//                           else removed
//   .damaged.step_N.<k>     a step_N that did not load or was not committed,
//                           moved aside; kept until a checkpoint of a later
//                           step commits (never removed at start-up)
//   .superseded.step_N.<k>  a committed checkpoint newer than the step a run
//                           resumed from; kept like .damaged
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dcp/env.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace internal {

constexpr const char* kRecordName = "dcp_manager.record";
constexpr int kRecordVersion = 1;  // record versions this build reads: 1 to kRecordVersion
constexpr const char* kDamaged = "damaged";
constexpr const char* kSuperseded = "superseded";
constexpr const char* kReplacedPrefix = ".replaced.";  // .replaced.step_N.<k>

double wall_clock();

// Every file operation of the manager goes to an Env (the options' env, or
// the one the directory's scheme names: dcp::env_for). Paths here are spelt
// as the user gave the directory ("memory://name/run/step_..." included), so
// messages and CheckpointInfo::path name them so; each call passes
// dcp::env_path(path) to the Env.
Env* env_of(Env* env, const std::string& dir);   // `env`, or env_for(dir) when null
bool exists(Env* env, const std::string& path);  // a file or a directory
void fsync_dir(Env* env, const std::string& path);
void write_durably(Env* env, const std::string& path, const std::string& data, bool sync);
void rename_or_throw(Env* env, const std::string& from, const std::string& to);

// The names in `dir`. A directory that cannot be listed is a StorageError
// naming it and the errno text; with `missing_ok`, one that does not exist
// has no entries.
std::vector<std::string> entries(Env* env, const std::string& dir, bool missing_ok = false);
// "step_<digits>" -> the step.
bool parse_step_dir(const std::string& name, int64_t& step);

// The record of a checkpoint of `step`, as the commit writes it.
std::string record_text(int64_t step, int world_size, const std::map<std::string, double>& metrics);

// A step_* entry of the directory.
struct StepDir {
  std::string name;     // step_0000000140
  int64_t step = 0;     // 140
  std::string problem;  // why it is not a committed checkpoint; empty when it is
  CheckpointInfo info;  // from its record, when committed
};
// Every step_* entry of `dir`, committed or not, oldest first.
std::vector<StepDir> scan_step_dirs(Env* env, const std::string& dir, bool missing_ok = false);
// Why the step_N directory `path` is not a committed checkpoint of `step`
// (no .metadata, no record, a bad record); empty when it is, with `info`
// filled from the record.
std::string commit_problem(Env* env, const std::string& path, int64_t step, CheckpointInfo& info);

// Renames <dir>/<name> to <dir>/.<kind>.<name>.<k> with the smallest k not
// taken, fsyncs <dir> when `sync`; returns the new path.
std::string move_aside(Env* env, const std::string& dir, const std::string& name, const char* kind,
                       bool sync);

// Retention after the commit of `step` (coordinator): the committed
// checkpoints `keep` does not keep, and the .damaged / .superseded
// directories of steps before `step`, are renamed to .old.* and handed to
// `delete_later` once the renames are durable (fsync of <dir> when `sync`).
// Errors are logged: the checkpoint is committed.
void retain(Env* env, const std::string& dir, int64_t step, const KeepPolicy& keep,
            uint64_t save_number, bool sync, const std::function<void(std::string)>& delete_later);

}  // namespace internal
}  // namespace manager
}  // namespace dcp
