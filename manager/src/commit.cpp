#include "commit.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "dcp/error.h"
#include "dcp/logging.h"
#include "dcp/manager/manager.h"
#include "directory.h"

namespace dcp {
namespace manager {
namespace internal {

namespace {

// Wraps the file-system writer of one save: finish() (coordinator only)
// commits the checkpoint, steps 4-7 of the protocol above.
class CommitWriter final : public StorageWriterWrapper {
 public:
  CommitWriter(std::shared_ptr<StorageWriter> target, CommitContext ctx)
      : StorageWriterWrapper(std::move(target)), ctx_(std::move(ctx)) {}

  std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                   SavePlanner& planner) override {
    ctx_.phase("write", ctx_.step);
    return StorageWriterWrapper::write_data(plan, planner);
  }

  void finish(Metadata& md, const std::vector<std::vector<WriteResult>>& results) override {
    ctx_.phase("metadata", ctx_.step);
    StorageWriterWrapper::finish(md, results);
    ctx_.phase("record", ctx_.step);
    write_durably(ctx_.env, ctx_.tmp + "/" + kRecordName,
                  record_text(ctx_.step, ctx_.world_size, ctx_.metrics), ctx_.sync);
    if (ctx_.sync) fsync_dir(ctx_.env, ctx_.tmp);
    ctx_.phase("rename", ctx_.step);
    make_room();
    try {
      rename_or_throw(ctx_.env, ctx_.tmp, ctx_.final_path);
    } catch (...) {
      restore_replaced();
      throw;
    }
    if (ctx_.sync) {
      try {
        fsync_dir(ctx_.env, ctx_.dir);
      } catch (...) {
        // The save fails, so step_N must not stay and pass for committed
        // (nor make the retry an AlreadyExistsError): back to .tmp, and
        // the checkpoint it was to replace back in its place.
        undo_rename();
        restore_replaced();
        throw;
      }
    }
    // Only now, with the new step_N durable, may the one it replaced go.
    if (!replaced_.empty()) ctx_.delete_later(std::exchange(replaced_, std::string()));
    ctx_.phase("retention", ctx_.step);
    retain(ctx_.env, ctx_.dir, ctx_.step, ctx_.keep, ctx_.save_number, ctx_.sync,
           ctx_.delete_later);
  }

 private:
  // An existing step_N: a committed checkpoint is kept (AlreadyExistsError)
  // or, with `force`, replaced; anything else is moved aside, never said to
  // be committed.
  void make_room() {
    if (!exists(ctx_.env, ctx_.final_path)) return;
    const std::string name = CheckpointManager::step_dir_name(ctx_.step);
    CheckpointInfo info;
    const std::string problem = commit_problem(ctx_.env, ctx_.final_path, ctx_.step, info);
    if (problem.empty()) {
      if (!ctx_.force) throw AlreadyExistsError("'" + ctx_.final_path + "' is already committed");
      // Set aside, not deleted, until the new step_N is durable: a save
      // that fails from here on puts it back, and a crash leaves it as
      // .replaced.step_N.<k>, which start-up puts back when no step_N
      // committed (CheckpointManager::open_directory).
      const std::string aside =
          ctx_.dir + "/" + kReplacedPrefix + name + "." + std::to_string(ctx_.save_number);
      rename_or_throw(ctx_.env, ctx_.final_path, aside);
      replaced_ = aside;
      return;
    }
    const std::string aside = move_aside(ctx_.env, ctx_.dir, name, kDamaged, ctx_.sync);
    logger().warn(
        "'{}' is not a committed checkpoint ({}): moved aside to '{}' (kept until a checkpoint of "
        "a later step commits) before committing step {}",
        ctx_.final_path, problem, aside, ctx_.step);
  }

  // The committed step_N that make_room() set aside, back in its place.
  void restore_replaced() noexcept {
    if (replaced_.empty()) return;
    try {
      rename_or_throw(ctx_.env, replaced_, ctx_.final_path);
      if (ctx_.sync) fsync_dir(ctx_.env, ctx_.dir);
      replaced_.clear();
    } catch (const std::exception& e) {
      logger().warn(
          "cannot move '{}' back to '{}' after the commit replacing it failed: {} (the next "
          "start-up puts it back)",
          replaced_, ctx_.final_path, e.what());
    }
  }

  void undo_rename() noexcept {
    try {
      rename_or_throw(ctx_.env, ctx_.final_path, ctx_.tmp);
    } catch (const std::exception& e) {
      logger().warn("cannot move '{}' back to '{}' after its commit failed: {}", ctx_.final_path,
                    ctx_.tmp, e.what());
    }
  }

  CommitContext ctx_;
  std::string replaced_;  // a committed step_N a forced save set aside
};

}  // namespace

std::shared_ptr<StorageWriter> make_commit_writer(std::shared_ptr<StorageWriter> target,
                                                  CommitContext ctx) {
  return std::make_shared<CommitWriter>(std::move(target), std::move(ctx));
}

}  // namespace internal
}  // namespace manager
}  // namespace dcp
