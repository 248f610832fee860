#include "dist.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include "codec.h"
#include "dcp/logging.h"

namespace dcp {
namespace internal {

namespace {
constexpr uint8_t kOk = 0, kFailed = 1;
}

DistWrapper::DistWrapper(std::string operation, std::shared_ptr<Collectives> collectives,
                         int coordinator_rank)
    : operation_(std::move(operation)),
      coll_(std::move(collectives)),
      coordinator_(coordinator_rank) {
  if (coll_) {
    rank_ = coll_->rank();
    world_size_ = coll_->world_size();
  }
  if (coordinator_rank < 0 || coordinator_rank >= world_size_)
    throw InvalidArgumentError("coordinator rank " + std::to_string(coordinator_rank) +
                               " does not exist in a world of " + std::to_string(world_size_) +
                               (world_size_ == 1 ? " (no process group given)" : ""));
}

void DistWrapper::fail_local(const std::string& step, ErrorCode code, const std::string& msg) {
  throw CheckpointError(operation_, {RankFailure{rank_, step, code, msg, false}});
}

std::string DistWrapper::ok(const std::string& payload) {
  std::string s(1, static_cast<char>(kOk));
  s += payload;
  return s;
}

std::string DistWrapper::failed(const std::vector<RankFailure>& failures) const {
  std::string s(1, static_cast<char>(kFailed));
  s += wire::encode(failures);
  return s;
}

bool DistWrapper::is_ok(const std::string& envelope) {
  return !envelope.empty() && envelope[0] == static_cast<char>(kOk);
}

bool DistWrapper::split(const std::string& envelope, std::string_view& payload,
                        std::vector<RankFailure>& failures) {
  if (envelope.empty()) throw CorruptionError("empty message from a peer rank");
  std::string_view rest(envelope.data() + 1, envelope.size() - 1);
  if (envelope[0] == static_cast<char>(kOk)) {
    payload = rest;
    return true;
  }
  std::vector<RankFailure> theirs;
  wire::decode(rest, theirs);
  failures.insert(failures.end(), theirs.begin(), theirs.end());
  return false;
}

std::string DistWrapper::envelope(const std::string& step, const std::function<std::string()>& fn) {
  try {
    return ok(fn());
  } catch (const CheckpointError& e) {
    return failed(e.failures());
  } catch (...) {
    return failed({current_failure(step)});
  }
}

RankFailure current_failure(int rank, const std::string& step) {
  RankFailure f{rank, step, ErrorCode::kInternal, "", false};
  try {
    throw;
  } catch (const Error& e) {
    f.code = e.code();
    f.retryable = e.retryable();
    f.message = e.what();
  } catch (const c10::Error& e) {
    f.message = e.what_without_backtrace();
    logger().debug("rank {} in {}: {}", rank, step, e.what());
  } catch (const std::bad_alloc&) {
    f.message = "out of memory (std::bad_alloc)";
  } catch (const std::exception& e) {
    f.message = e.what();
  } catch (...) {
    f.message = "an exception that is not a std::exception";
  }
  return f;
}

DistWrapper::Phases::Phases(const DistWrapper& dist, std::string step)
    : dist_(dist),
      step_(std::move(step)),
      enabled_(logger().should_log(spdlog::level::debug)),
      last_(std::chrono::steady_clock::now()) {}

void DistWrapper::Phases::mark(const char* phase) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  line_ += fmt::format("{}{} {:.3f} s", line_.empty() ? "" : ", ", phase,
                       std::chrono::duration<double>(now - last_).count());
  last_ = now;
}

DistWrapper::Phases::~Phases() {
  if (enabled_)
    logger().debug("{}, round '{}' on rank {}: {}", dist_.operation_, step_, dist_.rank_, line_);
}

void DistWrapper::all_ranks(const std::string& step, const std::function<void()>& fn) {
  std::function<int()> local = [&] {
    fn();
    return 0;
  };
  std::function<int(std::vector<int>)> none = [](std::vector<int>) { return 0; };
  gather_broadcast<int, int>(step, local, none);
}

}  // namespace internal

void Collectives::barrier() {
  gather(std::string(), 0);
  broadcast(std::string(), 0);
}

std::string checked_broadcast(const std::shared_ptr<Collectives>& collectives,
                              const std::string& operation, const std::string& step,
                              const std::function<std::string()>& fn, int root) {
  internal::DistWrapper dist(operation, collectives, root);
  return dist.broadcast<std::string>(step, fn);
}

std::vector<std::string> checked_all_gather(const std::shared_ptr<Collectives>& collectives,
                                            const std::string& operation, const std::string& step,
                                            const std::function<std::string()>& fn, int root) {
  internal::DistWrapper dist(operation, collectives, root);
  std::function<std::vector<std::string>(std::vector<std::string>)> all =
      [](std::vector<std::string> v) { return v; };
  return dist.gather_broadcast<std::string, std::vector<std::string>>(step, fn, all);
}

void checked_all_ranks(const std::shared_ptr<Collectives>& collectives,
                       const std::string& operation, const std::string& step,
                       const std::function<void()>& fn, int root) {
  internal::DistWrapper dist(operation, collectives, root);
  dist.all_ranks(step, fn);
}

}  // namespace dcp
