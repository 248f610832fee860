// The collective rounds of the protocol and its error discipline.
//
// Every step runs under one rule: an exception on any rank becomes a
// RankFailure that travels with the round's messages, so every rank throws
// the same CheckpointError naming the failed ranks, steps and messages; the
// coordinator does not run a global step (nor write metadata) after a
// failure. A rank that dies makes the others' collectives fail (PeerLostError
// at once, or TimeoutError for a rank that hangs), which they report as a
// failure of their own.
//
// Without Collectives (one process) the rounds are direct calls.
#pragma once

#include <tbb/parallel_for.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "dcp/collectives.h"
#include "dcp/error.h"
#include "wire.h"

namespace dcp {
namespace internal {

// The failure of `rank` in `step` for the exception being handled (call it
// inside a catch block): its code, retryable() and message; the message has
// no backtrace (c10::Error's what() carries one: it goes to the debug log).
RankFailure current_failure(int rank, const std::string& step);

// Runs fn; what it throws (but a CheckpointError, which passes as it is)
// becomes a CheckpointError of `operation` whose one failure is this rank's
// in `step`, its message prefixed with `context` ("state_dict() of 'rng'")
// unless that is empty.
template <typename Fn>
auto with_context(const std::string& operation, int rank, const std::string& step,
                  const std::string& context, const Fn& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const CheckpointError&) {
    throw;
  } catch (...) {
    RankFailure f = current_failure(rank, step);
    if (!context.empty()) f.message = context + ": " + f.message;
    throw CheckpointError(operation, {std::move(f)});
  }
}

class DistWrapper {
 public:
  // `collectives` may be null: a single process, rank 0 of 1.
  DistWrapper(std::string operation, std::shared_ptr<Collectives> collectives,
              int coordinator_rank);

  const std::string& operation() const { return operation_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_coordinator() const { return rank_ == coordinator_; }

  // local() on every rank; the results gathered on the coordinator go
  // through global(), whose i-th output goes back to rank i.
  template <typename T>
  T gather_scatter(const std::string& step, const std::function<T()>& local,
                   const std::function<std::vector<T>(std::vector<T>)>& global) {
    if (!coll_) {
      T mine = run_local(step + ":local", local);
      std::vector<T> all;
      all.push_back(std::move(mine));
      std::vector<T> out = run_local(step + ":global", [&] { return global(std::move(all)); });
      if (out.size() != 1) fail_local(step + ":global", ErrorCode::kInternal, "wrong plan count");
      return std::move(out[0]);
    }
    // The coordinator's own plan and reply never go through the wire: it
    // keeps them as they are (the encoding is lossless, so nothing differs).
    // The other ranks keep their local plans too: a reply names the items
    // they keep (wire::encode_reply) instead of carrying them back.
    Phases phases(*this, step);
    std::vector<RankFailure> failures;
    std::optional<T> own;
    std::string mine = envelope(step + ":local", [&] {
      own = local();
      return is_coordinator() ? std::string() : wire::encode(*own);
    });
    phases.mark("local");
    std::vector<std::string> gathered =
        transport(step, [&] { return coll_->gather(mine, coordinator_); });
    phases.mark("gather");
    std::vector<std::string> replies;
    std::optional<T> own_reply;
    if (is_coordinator()) {
      std::vector<T> all(gathered.size());
      std::vector<std::string_view> payloads;
      std::vector<std::vector<size_t>> bounds(gathered.size());
      const std::string verdict = envelope(step + ":global", [&] {
        payloads = collect(gathered, all, failures, &bounds);
        phases.mark("decode");
        if (!failures.empty()) return std::string();
        all[coordinator_] = std::move(*own);
        std::vector<T> out = global(std::move(all));
        phases.mark("global");
        if (out.size() != static_cast<size_t>(world_size_))
          throw Error(ErrorCode::kInternal, "the global step returned " +
                                                std::to_string(out.size()) + " plans for " +
                                                std::to_string(world_size_) + " ranks");
        replies.resize(world_size_);
        tbb::parallel_for(0, world_size_, [&](int r) {
          if (r != coordinator_)
            replies[r] = ok(wire::encode_reply(out[r], payloads[r], bounds[r]));
        });
        replies[coordinator_] = ok(std::string());
        own_reply = std::move(out[coordinator_]);
        phases.mark("encode");
        return std::string();
      });
      if (!is_ok(verdict))
        replies.assign(world_size_, verdict);
      else if (!failures.empty())
        replies.assign(world_size_, failed(failures));
    }
    std::string reply = transport(step, [&] { return coll_->scatter(replies, coordinator_); });
    phases.mark("scatter");
    if (own_reply && is_ok(reply)) return std::move(*own_reply);
    std::vector<RankFailure> theirs;
    std::string_view payload;
    if (!split(reply, payload, theirs)) throw CheckpointError(operation_, std::move(theirs));
    T out{};
    wire::decode_reply(payload, *own, out);
    phases.mark("rebuild");
    return out;
  }

  // local() on every rank; the results gathered on the coordinator go
  // through global(), whose result every rank returns.
  template <typename T, typename R>
  R gather_broadcast(const std::string& step, const std::function<T()>& local,
                     const std::function<R(std::vector<T>)>& global) {
    if (!coll_) {
      T mine = run_local(step + ":local", local);
      std::vector<T> all;
      all.push_back(std::move(mine));
      return run_local(step + ":global", [&] { return global(std::move(all)); });
    }
    Phases phases(*this, step);
    std::vector<RankFailure> failures;
    std::optional<T> own;
    std::string mine = envelope(step + ":local", [&] {
      T t = local();
      if (!is_coordinator()) return wire::encode(t);
      own = std::move(t);
      return std::string();
    });
    phases.mark("local");
    std::vector<std::string> gathered =
        transport(step, [&] { return coll_->gather(mine, coordinator_); });
    phases.mark("gather");
    std::string result;
    std::optional<R> own_result;
    if (is_coordinator()) {
      std::vector<T> all(gathered.size());
      result = envelope(step + ":global", [&] {
        collect(gathered, all, failures);
        phases.mark("decode");
        if (!failures.empty()) return std::string();
        all[coordinator_] = std::move(*own);
        own_result = global(std::move(all));
        phases.mark("global");
        std::string encoded = wire::encode(*own_result);
        phases.mark("encode");
        return encoded;
      });
      if (is_ok(result) && !failures.empty()) result = failed(failures);
    }
    std::string reply = transport(step, [&] { return coll_->broadcast(result, coordinator_); });
    phases.mark("broadcast");
    if (own_result && is_ok(reply)) return std::move(*own_result);
    R out{};
    open(reply, out);
    phases.mark("decode");
    return out;
  }

  // fn() on the coordinator; every rank returns its result.
  template <typename T>
  T broadcast(const std::string& step, const std::function<T()>& fn) {
    if (!coll_) return run_local(step, fn);
    std::string result;
    std::optional<T> own;
    if (is_coordinator())
      result = envelope(step, [&] {
        own = fn();
        return wire::encode(*own);
      });
    std::string reply = transport(step, [&] { return coll_->broadcast(result, coordinator_); });
    if (own && is_ok(reply)) return std::move(*own);
    T out{};
    open(reply, out);
    return out;
  }

  // fn() on every rank; every rank throws if any failed.
  void all_ranks(const std::string& step, const std::function<void()>& fn);

 private:
  // Times the phases of one round; a debug-level log line lists them when
  // the round ends (or fails).
  class Phases {
   public:
    Phases(const DistWrapper& dist, std::string step);
    ~Phases();
    void mark(const char* phase);  // the time since the previous mark is `phase`'s

   private:
    const DistWrapper& dist_;
    std::string step_;
    bool enabled_;
    std::chrono::steady_clock::time_point last_;
    std::string line_;
  };

  template <typename Fn>
  auto run_local(const std::string& step, const Fn& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const CheckpointError&) {
      throw;
    } catch (...) {
      throw CheckpointError(operation_, {current_failure(step)});
    }
  }
  [[noreturn]] void fail_local(const std::string& step, ErrorCode code, const std::string& msg);
  RankFailure current_failure(const std::string& step) const {
    return internal::current_failure(rank_, step);
  }

  // Runs fn, returning ok(payload) or failed({this rank's failure}).
  std::string envelope(const std::string& step, const std::function<std::string()>& fn);
  // Runs a collective; a transport failure is thrown as this rank's failure.
  template <typename Fn>
  auto transport(const std::string& step, const Fn& fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (...) {
      throw CheckpointError(operation_, {current_failure(step + ":collective")});
    }
  }
  // Decodes the gathered payloads of the ranks that succeeded (not the
  // coordinator's own, which stays unencoded) into `all`, or appends the
  // failures; returns the payloads. `bounds`, for plans, gets each payload's
  // item bounds.
  template <typename T>
  std::vector<std::string_view> collect(const std::vector<std::string>& gathered,
                                        std::vector<T>& all, std::vector<RankFailure>& failures,
                                        std::vector<std::vector<size_t>>* bounds = nullptr) {
    std::vector<std::string_view> payloads(gathered.size());
    std::vector<size_t> ok_ranks;
    for (size_t r = 0; r < gathered.size(); ++r)
      if (split(gathered[r], payloads[r], failures) && static_cast<int>(r) != coordinator_)
        ok_ranks.push_back(r);
    if (!failures.empty()) return payloads;
    // The other ranks wait for the coordinator here: decode their plans
    // (100k+ items each) in parallel.
    tbb::parallel_for(size_t{0}, ok_ranks.size(), [&](size_t i) {
      const size_t r = ok_ranks[i];
      if constexpr (std::is_same_v<T, SavePlan> || std::is_same_v<T, LoadPlan>)
        wire::decode(payloads[r], all[r], bounds ? &(*bounds)[r] : nullptr);
      else
        wire::decode(payloads[r], all[r]);
    });
    return payloads;
  }
  template <typename T>
  void open(const std::string& reply, T& out) {
    std::vector<RankFailure> failures;
    std::string_view payload;
    if (!split(reply, payload, failures)) throw CheckpointError(operation_, std::move(failures));
    wire::decode(payload, out);
  }

  static std::string ok(const std::string& payload);
  std::string failed(const std::vector<RankFailure>& failures) const;
  static bool is_ok(const std::string& envelope);
  // True with the payload for an ok envelope; false (failures appended) otherwise.
  static bool split(const std::string& envelope, std::string_view& payload,
                    std::vector<RankFailure>& failures);

  std::string operation_;
  std::shared_ptr<Collectives> coll_;
  int rank_ = 0;
  int world_size_ = 1;
  int coordinator_ = 0;
};

}  // namespace internal
}  // namespace dcp
