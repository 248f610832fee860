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
#include <memory>
#include <string>
#include <vector>

namespace c10d {
class ProcessGroup;
}

namespace dcp {

// Every rank of the group calls each method in the same order. Methods throw
// TimeoutError when a peer does not take part within the timeout, and
// StorageError-free dcp::Error for other transport failures.
class Collectives {
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
};

// Collectives over a c10d process group. Each operation waits at most
// `timeout`; a rank that died or hangs makes the others throw TimeoutError
// (not hang). Not thread-safe: use one group per thread that checkpoints
// (async saves use a group of their own).
std::shared_ptr<Collectives> make_process_group_collectives(
    c10::intrusive_ptr<c10d::ProcessGroup> process_group,
    std::chrono::milliseconds timeout = std::chrono::minutes(10));

}  // namespace dcp
