// The collectives the DCP protocol needs: gather to a root, scatter from it,
// broadcast from it, over byte strings of any length.
//
// save()/load() take a Collectives in their options; without one they run a
// single process. make_process_group_collectives() adapts a LibTorch c10d
// ProcessGroup (Gloo on CPU; any c10d backend that implements gather,
// scatter, broadcast and allreduce on CPU tensors).
#pragma once

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dcp/export.h"

namespace c10d {
class ProcessGroup;
}

namespace dcp {

// Every rank of the group calls each method in the same order. Methods throw
// TimeoutError when a peer does not take part within the timeout,
// PeerLostError when a peer's connection closed first (it exited or
// crashed), and another dcp::Error for any other failure.
class DCP_CORE_EXPORT Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Every rank's `mine`, in rank order, on `root`; an empty vector elsewhere.
  virtual std::vector<std::string> gather(const std::string& mine, int root) = 0;
  // On `root`, `parts` has one string per rank; each rank returns its own.
  virtual std::string scatter(const std::vector<std::string>& parts, int root) = 0;
  // `data` of `root`, on every rank.
  virtual std::string broadcast(const std::string& data, int root) = 0;
  // Returns once every rank of the group has called it. The default is a
  // gather to rank 0 and a broadcast from it (so a subclass written before
  // barrier() existed still compiles); the c10d adapter uses the group's own.
  virtual void barrier();
};

// Rounds of your own under the error discipline of save() and load() (the
// CheckpointManager makes its decisions with them). `fn` runs inside the
// round: when it throws on any rank, or a rank's collective fails, every rank
// throws the same CheckpointError naming `operation`, `step`, the rank and
// its message, at once: no rank is left waiting for a peer that gave up.
// Every rank must call the same rounds in the same order. Without
// collectives (one process) fn runs directly; what it throws still becomes
// a CheckpointError.
//
// fn() on `root` only; every rank returns its result.
DCP_CORE_EXPORT std::string checked_broadcast(const std::shared_ptr<Collectives>& collectives,
                                              const std::string& operation, const std::string& step,
                                              const std::function<std::string()>& fn, int root = 0);
// fn() on every rank; every rank returns all the results, in rank order.
DCP_CORE_EXPORT std::vector<std::string> checked_all_gather(
    const std::shared_ptr<Collectives>& collectives, const std::string& operation,
    const std::string& step, const std::function<std::string()>& fn, int root = 0);
// fn() on every rank; returns on every rank when all succeeded.
DCP_CORE_EXPORT void checked_all_ranks(const std::shared_ptr<Collectives>& collectives,
                                       const std::string& operation, const std::string& step,
                                       const std::function<void()>& fn, int root = 0);

// Collectives over a c10d process group. Each operation waits at most
// `timeout`: a rank that died makes the others throw PeerLostError at once,
// one that hangs makes them throw TimeoutError at the timeout (the adapter
// tells the two apart by the time the failed operation took, since Gloo
// reports both the same way). Not thread-safe: use one group per thread that checkpoints
// (async saves use a group of their own).
DCP_CORE_EXPORT std::shared_ptr<Collectives> make_process_group_collectives(
    c10::intrusive_ptr<c10d::ProcessGroup> process_group,
    std::chrono::milliseconds timeout = std::chrono::minutes(10));

}  // namespace dcp
