// CheckpointManager::resume(): which checkpoint to load, the fallback, and
// what is moved aside.
//
// The coordinator lists the directory (a checked round); every rank walks
// the same list, and each load (collective) fails or succeeds on every rank
// alike, so every rank reaches the same decision. Once a checkpoint loaded
// (or the run starts fresh), the coordinator moves aside, in a checked round:
//   - every step_N that is not committed (no .metadata, no valid record) and
//     every checkpoint skipped because it did not load: .damaged.step_N.<k>;
//   - every committed checkpoint newer than the step resumed from (only with
//     `from: <step>` or `from: none`: `latest` loads the newest that loads):
//     .superseded.step_N.<k>.
// So no directory is left at a step the run will save again, and a later
// `latest` never jumps into an abandoned future. Both kinds stay for
// inspection until a checkpoint of a later step commits (retention). When
// resume() throws, nothing is moved.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <sstream>

#include "dcp/checkpoint.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/logging.h"
#include "directory.h"

namespace dcp {
namespace manager {

using internal::kDamaged;
using internal::kSuperseded;

struct CheckpointManager::ResumeListing {
  std::vector<int64_t> committed;                                // oldest first
  std::vector<std::pair<std::string, std::string>> uncommitted;  // name, why not
};

namespace {

std::string encode(const std::vector<internal::StepDir>& dirs) {
  std::string out;
  for (const auto& d : dirs)
    out += (d.problem.empty() ? "c " : "u ") + d.name + " " + d.problem + "\n";
  return out;
}

CheckpointManager::ResumeListing decode(const std::string& text) {
  CheckpointManager::ResumeListing listing;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto space = line.find(' ', 2);
    if (line.size() < 3 || space == std::string::npos)
      throw CorruptionError("resume: a bad line in the coordinator's listing: '" + line + "'");
    const std::string name = line.substr(2, space - 2);
    int64_t step = 0;
    if (line[0] == 'c' && internal::parse_step_dir(name, step))
      listing.committed.push_back(step);
    else
      listing.uncommitted.emplace_back(name, line.substr(space + 1));
  }
  return listing;
}

}  // namespace

bool CheckpointManager::load_from(const std::string& path, bool warm_start) {
  StateDict sd = build_state_dict(true);
  LoadOptions lo;
  FileSystemReaderOptions ro;
  ro.threads = options_.storage.threads;
  ro.verify_checksums = options_.storage.verify_checksums;
  ro.env = env_;
  lo.storage_reader = make_filesystem_reader(path, ro);
  lo.strict = options_.resume.strict;
  lo.exclude = options_.resume.exclude;
  lo.collectives = coll_;
  if (warm_start) {
    lo.rename = options_.resume.rename;
    lo.skip_unreadable_values = options_.resume.skip_unreadable;
  }
  dcp::load(sd, lo);
  return true;
}

int64_t CheckpointManager::resume() {
  const int64_t step = resume_by_policy();
  reserve_staging();
  return step;
}

void CheckpointManager::reserve_staging() {
  if (!saver_ || objects_.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    saver_->reserve(build_state_dict(false));
  } catch (const std::exception& e) {
    logger().warn(
        "async saves: cannot reserve the staging buffers ({}); the first save will "
        "allocate them",
        e.what());
    return;
  }
  logger().debug("async saves: staging buffers reserved in {:.3f} s",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

int64_t CheckpointManager::resume_by_policy() {
  const ResumePolicy& r = options_.resume;
  // A directory that cannot be listed is every rank's error, never a fresh start.
  const ResumeListing listing =
      decode(checked_broadcast(coll_, "resume from '" + options_.dir + "'", "list", [&] {
        return encode(internal::scan_step_dirs(env_, options_.dir));
      }));
  if (r.from == "none") {
    move_aside_after_resume(listing, 0, {});
    logger().info("resume: from none: starting fresh");
    return 0;
  }
  const bool numeric = !r.from.empty() && std::all_of(r.from.begin(), r.from.end(), ::isdigit);
  if (numeric) return resume_step(listing, std::stoll(r.from));
  if (!listing.committed.empty()) return resume_latest(listing);
  if (r.from != "latest") {
    load_from(r.from, /*warm_start=*/true);  // another run's checkpoint, or PyTorch's
    move_aside_after_resume(listing, 0, {});
    logger().info("warm start from '{}' (this run has no checkpoint yet)", r.from);
    return 0;
  }
  move_aside_after_resume(listing, 0, {});
  logger().info("resume: no checkpoint in '{}': starting fresh", options_.dir);
  return 0;
}

int64_t CheckpointManager::resume_step(const ResumeListing& listing, int64_t want) {
  const auto& steps = listing.committed;
  if (std::find(steps.begin(), steps.end(), want) == steps.end()) {
    std::string have;
    for (int64_t s : steps) have += (have.empty() ? "" : ", ") + std::to_string(s);
    throw NotFoundError("resume.from: no committed checkpoint of step " + std::to_string(want) +
                        " in '" + options_.dir + "' (committed: " + (have.empty() ? "none" : have) +
                        ")");
  }
  const std::string path = options_.dir + "/" + step_dir_name(want);
  load_from(path);
  move_aside_after_resume(listing, want, {});
  logger().info("resumed from step {} ('{}')", want, path);
  last_saved_step_ = want;
  return want;
}

int64_t CheckpointManager::resume_latest(const ResumeListing& listing) {
  const auto& steps = listing.committed;
  std::vector<int64_t> skipped;
  std::string failures;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string path = options_.dir + "/" + step_dir_name(*it);
    try {
      load_from(path);
    } catch (const Error& e) {
      if (!options_.resume.fallback_to_older) throw;
      logger().warn("resume: skipping checkpoint '{}', it does not load: {}", path, e.what());
      failures += "\n  " + path + ": " + e.what();
      skipped.push_back(*it);
      continue;
    }
    move_aside_after_resume(listing, *it, skipped);
    logger().info("resumed from step {} ('{}')", *it, path);
    last_saved_step_ = *it;
    return *it;
  }
  throw CorruptionError("resume: none of the " + std::to_string(steps.size()) +
                        " committed checkpoints in '" + options_.dir +
                        "' loads (not starting fresh):" + failures);
}

void CheckpointManager::move_aside_after_resume(const ResumeListing& listing, int64_t resumed,
                                                const std::vector<int64_t>& skipped) {
  struct Move {
    std::string name;
    const char* kind;
    std::string why;
  };
  std::vector<Move> moves;
  for (int64_t s : skipped) moves.push_back({step_dir_name(s), kDamaged, "it does not load"});
  for (const auto& [name, why] : listing.uncommitted)
    moves.push_back({name, kDamaged, "it is not a committed checkpoint (" + why + ")"});
  for (int64_t s : listing.committed)
    if (s > resumed && std::find(skipped.begin(), skipped.end(), s) == skipped.end())
      moves.push_back(
          {step_dir_name(s), kSuperseded,
           (resumed > 0 ? "this run resumed from the older step " + std::to_string(resumed)
                        : std::string("this run starts fresh")) +
               " and saves its own step " + std::to_string(s)});
  if (moves.empty()) return;  // every rank knows: the same listing, the same loads
  checked_broadcast(coll_, "resume from '" + options_.dir + "'", "move aside", [&] {
    for (const auto& m : moves) {
      const std::string to =
          internal::move_aside(env_, options_.dir, m.name, m.kind, options_.storage.fsync);
      logger().warn(
          "resume: moved '{}/{}' aside to '{}': {}; it is kept until a checkpoint of a later step "
          "commits",
          options_.dir, m.name, to, m.why);
    }
    return std::string();
  });
}

}  // namespace manager
}  // namespace dcp
