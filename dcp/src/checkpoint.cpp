#include "dcp/checkpoint.h"

#include <spdlog/spdlog.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <optional>
#include <system_error>
#include <typeinfo>

#include "dcp/logging.h"
#include "dcp/version.h"
#include "dist.h"
#include "resolve.h"
#include "save_metadata.h"
#include "walk.h"

namespace dcp {

using namespace internal;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Load side: a working copy of the destination in which Stateful objects are
// replaced by their state dicts (whose tensors alias the objects' own), and
// the objects to call load_state_dict() on afterwards, innermost first.
struct Fixup {
  std::shared_ptr<Stateful> object;
  ObjectPath path;  // where its state dict is in the working copy
};

Value resolve_for_load(const Value& v, ObjectPath& path, std::vector<Fixup>& fixups) {
  switch (v.kind()) {
    case Value::Kind::kStateful: {
      Value inner = resolve_for_load(Value(v.stateful()->state_dict()), path, fixups);
      fixups.push_back(Fixup{v.stateful(), path});
      return inner;
    }
    case Value::Kind::kDict: {
      Dict out;
      for (const auto& kv : v.dict()) {
        path.push_back(PathElement{false, kv.first, 0});
        out.emplace(kv.first, resolve_for_load(kv.second, path, fixups));
        path.pop_back();
      }
      return out;
    }
    case Value::Kind::kList: {
      List out;
      for (size_t i = 0; i < v.list().size(); ++i) {
        path.push_back(PathElement{true, "", static_cast<int64_t>(i)});
        out.push_back(resolve_for_load(v.list()[i], path, fixups));
        path.pop_back();
      }
      return out;
    }
    default:
      return v;
  }
}

std::string path_text(const ObjectPath& path) {
  std::string s;
  for (const auto& e : path) {
    if (e.is_index)
      s += "[" + std::to_string(e.index) + "]";
    else
      s += (s.empty() ? "" : ".") + e.key;
  }
  return s;
}

Value& at_path(Dict& root, const ObjectPath& path) {
  Value* node = &root.at(path.at(0).key);
  for (size_t i = 1; i < path.size(); ++i)
    node = path[i].is_index ? &node->list().at(path[i].index) : &node->dict().at(path[i].key);
  return *node;
}

// Copies loaded plain values back into the caller's tree; Stateful objects
// there were given theirs by load_state_dict().
void copy_back(Value& user, const Value& working) {
  if (user.is_stateful()) return;
  // Loaded in place: the same tensor (assigning it would only touch its refcount).
  if (user.is_tensor() && working.is_tensor() && user.tensor().is_same(working.tensor())) return;
  if (user.is_dict() && working.is_dict()) {
    for (auto& kv : user.dict()) {
      auto it = working.dict().find(kv.first);
      if (it != working.dict().end()) copy_back(kv.second, it->second);
    }
  } else if (user.is_list() && working.is_list() && user.list().size() == working.list().size()) {
    for (size_t i = 0; i < user.list().size(); ++i) copy_back(user.list()[i], working.list()[i]);
  } else {
    user = working;
  }
}

// "70.1 KiB in 0.004 s"; the rate only from 64 MiB on: below, fixed costs
// (fsync, metadata, opening files) dominate and the rate says nothing of the
// storage.
std::string throughput(uint64_t bytes, double secs) {
  char buf[128];
  const double mib = bytes / 1048576.0;
  int n = mib >= 1 ? std::snprintf(buf, sizeof buf, "%.1f MiB in %.3f s", mib, secs)
                   : std::snprintf(buf, sizeof buf, "%.1f KiB in %.3f s", bytes / 1024.0, secs);
  if (bytes >= (64u << 20) && secs > 0 && n > 0 && n < static_cast<int>(sizeof buf))
    std::snprintf(buf + n, sizeof buf - n, " (%.2f GB/s)", bytes / secs / 1e9);
  return buf;
}

}  // namespace

namespace {
bool contains_stateful(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kStateful:
      return true;
    case Value::Kind::kDict:
      for (const auto& kv : v.dict())
        if (contains_stateful(kv.second)) return true;
      return false;
    case Value::Kind::kList:
      for (const auto& e : v.list())
        if (contains_stateful(e)) return true;
      return false;
    default:
      return false;
  }
}
}  // namespace

thread_local internal::SavedStateDict::Lent internal::SavedStateDict::current_;

Value internal::resolve_stateful(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kStateful:
      return resolve_stateful(Value(v.stateful()->state_dict()));
    case Value::Kind::kDict: {
      Dict out;
      for (const auto& kv : v.dict()) out.emplace(kv.first, resolve_stateful(kv.second));
      return out;
    }
    case Value::Kind::kList: {
      List out;
      out.reserve(v.list().size());
      for (const auto& e : v.list()) out.push_back(resolve_stateful(e));
      return out;
    }
    default:
      return v;
  }
}

namespace {

// The writer of a save: the caller's (reset to the checkpoint id) or one
// made for the id's scheme.
std::shared_ptr<StorageWriter> writer_for(const SaveOptions& options) {
  std::shared_ptr<StorageWriter> writer = options.storage_writer;
  if (writer) {
    writer->reset(options.checkpoint_id);
  } else {
    writer = make_storage_writer(options.checkpoint_id);
  }
  return writer;
}

// The checkpoint id as the storage names it, or `id` when there is none.
template <typename Storage>
std::string display_id(const std::string& id, const std::shared_ptr<Storage>& storage) {
  if (!storage) return id;
  try {
    return storage->checkpoint_id();
  } catch (...) {
    return id;
  }
}

}  // namespace

void internal::save_after_failure(const SaveOptions& options, const std::string& step,
                                  std::exception_ptr failure) {
  DistWrapper dist("save of '" + display_id(options.checkpoint_id, options.storage_writer) + "'",
                   options.collectives, options.coordinator_rank);
  std::function<SavePlan()> local = [&]() -> SavePlan {
    with_context(dist.operation(), dist.rank(), step, "", [&] { std::rethrow_exception(failure); });
    return {};
  };
  std::function<std::vector<SavePlan>(std::vector<SavePlan>)> global = [](auto all) { return all; };
  dist.gather_scatter<SavePlan>("plan", local, global);
  throw Error(ErrorCode::kInternal, "save_after_failure: the failed save went through");
}

namespace {

// `state_dict` with its Stateful objects replaced by their state dicts (in
// `copy`); a state dict without any (the common case at scale) is planned as
// it is, uncopied. `flat`: nothing in it is nested (no dict, list or
// Stateful object), found in the same walk over its keys.
const StateDict& resolve_for_save(const StateDict& state_dict, StateDict& copy,
                                  const DistWrapper& dist, bool& flat) {
  flat = true;
  bool any_stateful = false;
  for (const auto& kv : state_dict) {
    if (!is_nested(kv.second)) continue;
    flat = false;
    if (contains_stateful(kv.second)) {
      any_stateful = true;
      break;
    }
  }
  if (!any_stateful) return state_dict;
  for (const auto& kv : state_dict)
    with_context(dist.operation(), dist.rank(), "state_dict", "state_dict() of '" + kv.first + "'",
                 [&] { copy.emplace(kv.first, resolve_stateful(kv.second)); });
  return copy;
}

}  // namespace

Metadata save(const StateDict& state_dict, const SaveOptions& options) {
  const auto t0 = Clock::now();
  // Whatever a rank does before the first round happens inside it, so that
  // its failure reaches every rank there: making the writer, resolving the
  // Stateful objects (their state_dict() may throw), planning.
  std::shared_ptr<StorageWriter> writer;
  std::exception_ptr setup_error;
  try {
    writer = writer_for(options);
  } catch (...) {
    setup_error = std::current_exception();
  }
  std::shared_ptr<SavePlanner> planner =
      options.planner ? options.planner : std::make_shared<DefaultSavePlanner>();
  DistWrapper dist("save of '" + display_id(options.checkpoint_id, writer) + "'",
                   options.collectives, options.coordinator_rank);

  StateDict resolved_copy;
  const StateDict* resolved = &state_dict;
  Metadata global_metadata;
  // At one rank the global plan of a DefaultSavePlanner (not a subclass,
  // which may plan otherwise) is its local plan: the metadata is built from
  // the final plan on a thread of its own while the data is written, not
  // before the first write. Inconsistent plans then fail the save in its
  // write step, still before anything commits.
  const bool metadata_during_write =
      dist.world_size() == 1 && typeid(*planner) == typeid(DefaultSavePlanner);
  std::optional<StorageMeta> meta;
  std::string flattening;  // the local plan's planner_data, for the metadata
  std::function<SavePlan()> local_step = [&] {
    if (setup_error) std::rethrow_exception(setup_error);
    bool flat = false;
    resolved = &resolve_for_save(state_dict, resolved_copy, dist, flat);
    meta = writer->storage_meta();
    SavedStateDict lent(*resolved, flat);
    planner->set_up_planner(*resolved, meta, dist.is_coordinator());
    writer->set_up_storage_writer(dist.is_coordinator(), dist.rank());
    return writer->prepare_local_plan(planner->create_local_plan());
  };
  std::function<std::vector<SavePlan>(std::vector<SavePlan>)> global_step =
      [&](std::vector<SavePlan> all) {
        if (metadata_during_write) {
          // What create_global_plan gives at one rank, but the metadata.
          flattening = std::move(all.at(0).planner_data);
          all[0].planner_data.clear();
          return writer->prepare_global_plan(std::move(all));
        }
        auto [plans, md] = planner->create_global_plan(std::move(all));
        global_metadata = std::move(md);
        return writer->prepare_global_plan(std::move(plans));
      };
  SavePlan central = dist.gather_scatter<SavePlan>("plan", local_step, global_step);
  const auto t_plan = Clock::now();

  Clock::time_point t_written;
  std::function<wire::WriteReport()> write_step = [&] {
    std::vector<SavePlan> final_plans;  // one: global_metadata() takes the plans of every rank
    final_plans.push_back(planner->finish_plan(std::move(central)));
    const SavePlan& final_plan = final_plans[0];
    // (Declared after the plan, so that a failed write waits for it before the plan goes.)
    std::future<Metadata> building;
    if (metadata_during_write) {
      auto build = [&final_plans, &meta] {
        return dcp::internal::global_metadata(final_plans, true, meta);
      };
      try {
        building = std::async(std::launch::async, build);
      } catch (const std::system_error&) {  // no thread to be had: here, now
        std::promise<Metadata> now;
        now.set_value(build());
        building = now.get_future();
      }
    }
    wire::WriteReport report;
    try {
      report.results = writer->write_data(final_plan, *planner).get();
    } catch (...) {
      // A plan the metadata refuses is the first thing to fix: its error,
      // not what writing it ran into.
      if (metadata_during_write) building.get();
      throw;
    }
    t_written = Clock::now();
    if (metadata_during_write) {
      global_metadata = building.get();
      global_metadata.planner_data = std::move(flattening);
    }
    report.digests = planner->replica_digests(report.results);
    return report;
  };
  std::function<wire::CommitSummary(std::vector<wire::WriteReport>)> finish_step =
      [&](std::vector<wire::WriteReport> all) {
        std::vector<std::vector<ReplicaDigest>> digests(all.size());
        std::vector<std::vector<WriteResult>> results(all.size());
        for (size_t r = 0; r < all.size(); ++r) {
          digests[r] = std::move(all[r].digests);
          results[r] = std::move(all[r].results);
        }
        planner->check_replicas(digests);
        // As every rank will have it (the coordinator's copy does not travel).
        if (global_metadata.library_version.empty()) global_metadata.library_version = kVersion;
        writer->finish(global_metadata, results);
        // The other ranks get the header only, unless asked (SaveOptions).
        wire::CommitSummary summary;
        summary.items = global_metadata.storage_data.size();
        // The bytes from the results (vectors) rather than a walk over the
        // metadata's map (~0.1 s at 400k items), when they are its items.
        size_t n = 0;
        for (const auto& v : results) {
          n += v.size();
          for (const auto& r : v) summary.bytes += r.storage_data.length;
        }
        if (n != summary.items) summary.bytes = global_metadata.total_bytes();
        summary.whole = options.metadata_on_every_rank;
        summary.metadata = std::move(global_metadata);
        return summary;
      };
  wire::CommitSummary committed = dist.gather_broadcast<wire::WriteReport, wire::CommitSummary>(
      "write", write_step, finish_step);
  Metadata md = std::move(committed.metadata);
  const double secs = seconds_since(t0);
  const uint64_t bytes = committed.bytes;
  if (options.stats) {
    auto span = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    *options.stats = SaveStats{span(t0, t_plan),
                               span(t_plan, t_written),
                               span(t_written, Clock::now()),
                               secs,
                               bytes,
                               static_cast<size_t>(committed.items)};
  }
  // At debug: a caller that saves repeatedly logs its own line per save (the
  // CheckpointManager's "checkpoint of step N committed").
  if (dist.is_coordinator())
    logger().debug("saved checkpoint '{}': {} items from {} rank(s), {}", writer->checkpoint_id(),
                   committed.items, dist.world_size(), throughput(bytes, secs));
  return md;
}

Metadata save(const StateDict& state_dict, const std::string& checkpoint_id) {
  SaveOptions options;
  options.checkpoint_id = checkpoint_id;
  return save(state_dict, options);
}

namespace {

std::shared_ptr<StorageReader> reader_for(const LoadOptions& options) {
  std::shared_ptr<StorageReader> reader = options.storage_reader;
  if (reader) {
    reader->reset(options.checkpoint_id);
  } else {
    reader = make_storage_reader(options.checkpoint_id);
  }
  return reader;
}

// The default planner when options.planner is null; `skip` (destination
// names of unreadable values being skipped) are excluded too.
std::shared_ptr<LoadPlanner> planner_for(const LoadOptions& options,
                                         const std::vector<std::string>& skip) {
  if (options.planner) return options.planner;
  LoadPlannerOptions po;
  po.strict = options.strict;
  po.exclude = options.exclude;
  po.exclude.insert(po.exclude.end(), skip.begin(), skip.end());
  po.rename = options.rename;
  return std::make_shared<DefaultLoadPlanner>(po);
}

// The saved items a plan reads, and their bytes.
// Items are told apart by their entry in the metadata (no copies of their
// indexes); one the metadata lacks (the reader reports it) counts as an item.
std::pair<size_t, uint64_t> items_and_bytes(const LoadPlan& plan, const Metadata& md) {
  std::vector<const StorageInfo*> seen;
  seen.reserve(plan.items.size());
  size_t missing = 0;
  for (const auto& ri : plan.items) {
    auto it = md.storage_data.find(ri.storage_index);
    if (it != md.storage_data.end())
      seen.push_back(&it->second);
    else
      ++missing;
  }
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  uint64_t bytes = 0;
  for (const StorageInfo* info : seen) bytes += info->length;
  return {seen.size() + missing, bytes};
}

// A load (or load_all, when `make_template` is set: it builds the state
// dict from the metadata). Whatever a rank does before the first round
// happens inside it, so that its failure reaches every rank there: making
// the reader, building the template, calling the Stateful objects'
// state_dict(). The first round reads the metadata on the coordinator.
LoadResult load_impl(StateDict& state_dict, const LoadOptions& options, bool make_template) {
  const auto t0 = Clock::now();
  std::shared_ptr<StorageReader> reader;
  std::exception_ptr setup_error;
  try {
    reader = reader_for(options);
  } catch (...) {
    setup_error = std::current_exception();
  }
  std::shared_ptr<LoadPlanner> planner;  // made once the reader is set up (unreadable keys)
  std::vector<std::string> skipped;      // "key: why"
  DistWrapper dist("load of '" + display_id(options.checkpoint_id, reader) + "'",
                   options.collectives, options.coordinator_rank);

  StateDict working;
  std::vector<Fixup> fixups;
  std::function<int()> set_up = [&] {
    if (setup_error) std::rethrow_exception(setup_error);
    return 0;
  };
  std::function<Metadata(std::vector<int>)> read_md = [&](std::vector<int>) {
    return reader->read_metadata();
  };
  Metadata md = dist.gather_broadcast<int, Metadata>("read_metadata", set_up, read_md);
  const auto t_md = Clock::now();

  std::function<LoadPlan()> local_step = [&] {
    reader->set_up_storage_reader(md, dist.is_coordinator());
    std::vector<std::string> skip;
    if (options.skip_unreadable_values && !options.planner)
      for (const auto& [key, why] : reader->unreadable_keys()) {
        skip.push_back(renamed_key(key, options.rename));
        skipped.push_back(skip.back() + ": " + why);
      }
    planner = planner_for(options, skip);
    if (make_template) state_dict = state_dict_from_metadata(md, options.rename, skip);
    ObjectPath path;
    for (const auto& kv : state_dict) {
      // A tensor or plain value is taken as it is (no state_dict() to call
      // and no message to build for each of 20,000 keys).
      if (!is_nested(kv.second)) {
        working.emplace_hint(working.end(), kv.first, kv.second);
        continue;
      }
      with_context(dist.operation(), dist.rank(), "state_dict",
                   "state_dict() of '" + kv.first + "'", [&] {
                     path.assign(1, PathElement{false, kv.first, 0});
                     working.emplace_hint(working.end(), kv.first,
                                          resolve_for_load(kv.second, path, fixups));
                   });
    }
    planner->set_up_planner(working, md, dist.is_coordinator());
    return reader->prepare_local_plan(planner->create_local_plan());
  };
  std::function<std::vector<LoadPlan>(std::vector<LoadPlan>)> global_step =
      [&](std::vector<LoadPlan> all) {
        return reader->prepare_global_plan(planner->create_global_plan(std::move(all)));
      };
  LoadPlan central = dist.gather_scatter<LoadPlan>("plan", local_step, global_step);
  const auto t_plan = Clock::now();

  uint64_t bytes = 0;
  size_t items = 0;
  dist.all_ranks("read", [&] {
    LoadPlan final_plan = planner->finish_plan(std::move(central));
    std::tie(items, bytes) = items_and_bytes(final_plan, md);
    reader->read_data(final_plan, *planner).get();
  });
  const auto t_read = Clock::now();

  // Hand the loaded values back: Stateful objects (innermost first), then the rest.
  dist.all_ranks("load_state_dict", [&] {
    for (const Fixup& f : fixups) {
      Value& v = at_path(working, f.path);
      with_context(dist.operation(), dist.rank(), "load_state_dict",
                   "load_state_dict() of '" + path_text(f.path) + "'",
                   [&] { f.object->load_state_dict(v.is_dict() ? v.dict() : Dict{}); });
    }
    // (`working` has the same keys in the same order.)
    auto w = working.begin();
    for (auto& kv : state_dict) {
      if (w == working.end() || w->first != kv.first) w = working.find(kv.first);
      if (w == working.end())
        throw Error(ErrorCode::kInternal, "key '" + kv.first + "' vanished during the load");
      copy_back(kv.second, w->second);
      ++w;
    }
  });

  LoadResult result;
  result.skipped_keys = std::move(skipped);
  if (!result.skipped_keys.empty())
    logger().warn("load of '{}' skipped {} value(s) dcp++ cannot represent, the first: {}",
                  reader->checkpoint_id(), result.skipped_keys.size(), result.skipped_keys[0]);
  if (auto* dp = dynamic_cast<DefaultLoadPlanner*>(planner.get())) {
    result.missing_keys = dp->missing_keys();
    result.unexpected_keys = dp->unexpected_keys();
  }
  const double secs = seconds_since(t0);
  if (options.stats) {
    auto span = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    *options.stats =
        LoadStats{span(t0, t_md), span(t_md, t_plan), span(t_plan, t_read), secs, bytes, items};
  }
  // At info on the coordinator only: one line per load, not one per rank.
  logger().log(dist.is_coordinator() ? spdlog::level::info : spdlog::level::debug,
               "loaded checkpoint '{}' on rank {}: {} items, {}", reader->checkpoint_id(),
               dist.rank(), items, throughput(bytes, secs));
  return result;
}

}  // namespace

LoadResult load(StateDict& state_dict, const LoadOptions& options) {
  return load_impl(state_dict, options, /*make_template=*/false);
}

LoadResult load(StateDict& state_dict, const std::string& checkpoint_id) {
  LoadOptions options;
  options.checkpoint_id = checkpoint_id;
  return load(state_dict, options);
}

StateDict load_all(const LoadOptions& options) {
  StateDict sd;
  load_impl(sd, options, /*make_template=*/true);
  return sd;
}

StateDict load_all(const std::string& checkpoint_id) {
  LoadOptions options;
  options.checkpoint_id = checkpoint_id;
  return load_all(options);
}

Metadata read_metadata(const std::string& checkpoint_id) {
  return make_storage_reader(checkpoint_id)->read_metadata();
}

Checkpointer::Checkpointer(std::shared_ptr<StorageWriter> writer,
                           std::shared_ptr<StorageReader> reader,
                           std::shared_ptr<SavePlanner> save_planner,
                           std::shared_ptr<LoadPlanner> load_planner,
                           std::shared_ptr<Collectives> collectives, int coordinator_rank)
    : writer_(std::move(writer)),
      reader_(std::move(reader)),
      save_planner_(std::move(save_planner)),
      load_planner_(std::move(load_planner)),
      collectives_(std::move(collectives)),
      coordinator_rank_(coordinator_rank) {}

Metadata Checkpointer::save(const StateDict& state_dict) {
  SaveOptions o;
  o.storage_writer = writer_;
  o.planner = save_planner_;
  o.coordinator_rank = coordinator_rank_;
  o.collectives = collectives_;
  return dcp::save(state_dict, o);
}

LoadResult Checkpointer::load(StateDict& state_dict) {
  LoadOptions o;
  o.storage_reader = reader_;
  o.planner = load_planner_;
  o.coordinator_rank = coordinator_rank_;
  o.collectives = collectives_;
  return dcp::load(state_dict, o);
}

}  // namespace dcp
