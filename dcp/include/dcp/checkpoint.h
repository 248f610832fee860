// save(), load() and the Checkpointer: the entry points of the DCP protocol.
//
// save() runs on every rank (in one process: no process group) in two
// rounds: local plans -> global plan on the coordinator -> final plans; then
// writes -> results -> metadata on the coordinator. load() mirrors it.
// Any failure on any rank surfaces as a CheckpointError naming the failed
// ranks and steps; a failed save never writes metadata.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dcp/collectives.h"
#include "dcp/default_planner.h"
#include "dcp/export.h"
#include "dcp/metadata.h"
#include "dcp/planner.h"
#include "dcp/storage.h"
#include "dcp/value.h"

namespace dcp {

// Where the time of one save went (seconds, wall clock, on this rank).
struct DCP_CORE_EXPORT SaveStats {
  double plan_seconds = 0;    // local plans, global plan, metadata: the first round
  double write_seconds = 0;   // writing this rank's items (and waiting for the others)
  double finish_seconds = 0;  // results to the coordinator, metadata written, commit
  double total_seconds = 0;
  uint64_t bytes = 0;  // bytes of all items in the checkpoint
  size_t items = 0;    // items in the checkpoint
};

struct DCP_CORE_EXPORT LoadStats {
  double metadata_seconds = 0;  // reading (and sharing) the metadata
  double plan_seconds = 0;
  double read_seconds = 0;
  double total_seconds = 0;
  uint64_t bytes = 0;  // bytes this rank read
  size_t items = 0;    // saved items this rank read
};

struct DCP_CORE_EXPORT SaveOptions {
  // Where to save: a directory path, or "memory://name". Used to create a
  // writer when `storage_writer` is null; otherwise passed to its reset().
  std::string checkpoint_id;
  std::shared_ptr<StorageWriter> storage_writer;  // default: from checkpoint_id
  std::shared_ptr<SavePlanner> planner;           // default: DefaultSavePlanner
  // The ranks that save together (make_process_group_collectives); null for
  // a single process. Every rank of the group calls save() with the same id.
  std::shared_ptr<Collectives> collectives;
  // The rank that runs the global plan and writes the metadata.
  int coordinator_rank = 0;
  // When set, receives the timings of the save.
  SaveStats* stats = nullptr;
  // What save() returns on the ranks other than the coordinator. false
  // (default): the committed metadata's header only (version, world_size,
  // storage_meta, library_version; state_dict_metadata, storage_data and
  // planner_data empty), so that those ranks neither receive nor decode the
  // whole metadata (~57 bytes per item: at 400k items most of the commit
  // round). true: the whole metadata on every rank, as the coordinator
  // committed it. The coordinator returns the whole metadata either way, and
  // SaveStats (bytes, items) describes the whole checkpoint on every rank.
  bool metadata_on_every_rank = false;
};

struct DCP_CORE_EXPORT LoadOptions {
  std::string checkpoint_id;
  std::shared_ptr<StorageReader> storage_reader;  // default: from checkpoint_id
  // default: DefaultLoadPlanner with `strict`.
  std::shared_ptr<LoadPlanner> planner;
  // Used when `planner` is null: missing/unexpected keys are an error
  // (true, default) or are reported in LoadResult (false).
  bool strict = true;
  // Used when `planner` is null: keys (or key prefixes) not to load; see
  // LoadPlannerOptions::exclude (destination names: applied after `rename`).
  std::vector<std::string> exclude;
  // Used when `planner` is null: maps checkpoint names onto the state
  // dict's (LoadPlannerOptions::rename), e.g. {{"", "model."}} to load a
  // torch.save(model.state_dict()) file under "model".
  std::vector<KeyRename> rename;
  // Checkpoints of other formats (docs/INTEROP.md) may hold values dcp++
  // cannot represent (a Python object of another class, an int beyond 64
  // bits). Loading one is an error naming the key (false, default); when
  // true they are skipped and listed in LoadResult::skipped_keys (with the
  // default planner: a given `planner` sees them as usual).
  bool skip_unreadable_values = false;
  std::shared_ptr<Collectives> collectives;  // null: a single process
  int coordinator_rank = 0;
  // When set, receives the timings of the load.
  LoadStats* stats = nullptr;
};

struct DCP_CORE_EXPORT LoadResult {
  std::vector<std::string> missing_keys;     // wanted but not in the checkpoint
  std::vector<std::string> unexpected_keys;  // in the checkpoint but not wanted
  // Values skipped as unreadable (skip_unreadable_values), by destination
  // name, each with the reason: "key: why".
  std::vector<std::string> skipped_keys;
};

// Saves `state_dict`. Stateful objects in it are asked for state_dict()
// first. Returns the metadata that was committed: whole on the coordinator
// (and in a single process); on the other ranks only its header, unless
// options.metadata_on_every_rank is set (see there). read_metadata() reads
// the whole of it back on any rank.
DCP_CORE_EXPORT Metadata save(const StateDict& state_dict, const SaveOptions& options);
DCP_CORE_EXPORT Metadata save(const StateDict& state_dict, const std::string& checkpoint_id);

// Loads into `state_dict` in place: every tensor receives the saved values
// (same dtype and shape, or a PlanMismatchError naming the key), plain
// values are replaced, Stateful objects get load_state_dict(). A load that
// fails in its reads (a checksum mismatch, a truncated or missing file) may
// have written some tensors already, the failing one included: load again
// (the manager's resume() falls back to an older checkpoint) before using
// them.
DCP_CORE_EXPORT LoadResult load(StateDict& state_dict, const LoadOptions& options);
DCP_CORE_EXPORT LoadResult load(StateDict& state_dict, const std::string& checkpoint_id);

// Loads a whole checkpoint without a template: tensors are allocated from
// the metadata, nested dicts rebuilt as saved. Tensors of 1 MiB and more are
// mapped pre-faulted (mmap MAP_POPULATE: page faults cost more than the
// reads on fresh memory); their storage cannot be resized.
DCP_CORE_EXPORT StateDict load_all(const LoadOptions& options);
DCP_CORE_EXPORT StateDict load_all(const std::string& checkpoint_id);

// Reads only the metadata of a checkpoint.
DCP_CORE_EXPORT Metadata read_metadata(const std::string& checkpoint_id);

// Holds a writer, a reader and planners, as DCP's Checkpointer.
class DCP_CORE_EXPORT Checkpointer {
 public:
  Checkpointer(std::shared_ptr<StorageWriter> writer, std::shared_ptr<StorageReader> reader,
               std::shared_ptr<SavePlanner> save_planner = nullptr,
               std::shared_ptr<LoadPlanner> load_planner = nullptr,
               std::shared_ptr<Collectives> collectives = nullptr, int coordinator_rank = 0);

  Metadata save(const StateDict& state_dict);
  LoadResult load(StateDict& state_dict);

 private:
  std::shared_ptr<StorageWriter> writer_;
  std::shared_ptr<StorageReader> reader_;
  std::shared_ptr<SavePlanner> save_planner_;
  std::shared_ptr<LoadPlanner> load_planner_;
  std::shared_ptr<Collectives> collectives_;
  int coordinator_rank_;
};

}  // namespace dcp
