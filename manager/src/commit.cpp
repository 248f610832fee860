#include "commit.h"

#include <spdlog/spdlog.h>

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
    rename_or_throw(ctx_.env, ctx_.tmp, ctx_.final_path);
    if (ctx_.sync) {
      try {
        fsync_dir(ctx_.env, ctx_.dir);
      } catch (...) {
        // The save fails, so step_N must not stay and pass for committed
        // (nor make the retry an AlreadyExistsError): back to .tmp.
        undo_rename();
        throw;
      }
    }
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
      const std::string old = ctx_.dir + "/.old." + name + "." + std::to_string(ctx_.save_number);
      rename_or_throw(ctx_.env, ctx_.final_path, old);
      // Durable before the deletion starts: a cut must not leave a step_N
      // whose files are partly gone.
      if (ctx_.sync) fsync_dir(ctx_.env, ctx_.dir);
      ctx_.delete_later(old);
      return;
    }
    const std::string aside = move_aside(ctx_.env, ctx_.dir, name, kDamaged, ctx_.sync);
    logger().warn(
        "'{}' is not a committed checkpoint ({}): moved aside to '{}' (kept until a checkpoint of "
        "a later step commits) before committing step {}",
        ctx_.final_path, problem, aside, ctx_.step);
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
};

}  // namespace

std::shared_ptr<StorageWriter> make_commit_writer(std::shared_ptr<StorageWriter> target,
                                                  CommitContext ctx) {
  return std::make_shared<CommitWriter>(std::move(target), std::move(ctx));
}

}  // namespace internal
}  // namespace manager
}  // namespace dcp
