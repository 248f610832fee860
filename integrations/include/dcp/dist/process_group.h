// Process-group setup from the environment: which rank this process is, how
// the ranks find each other, and the c10d Gloo process groups they talk over.
//
//   dcp::dist::DistEnvironment env = dcp::dist::detect_environment();
//   auto ctx = dcp::dist::DistContext::init(env);
//   auto collectives = ctx->collectives();  // for dcp::SaveOptions::collectives
//
// Rendezvous goes through a c10d::TCPStore served by rank 0 on
// MASTER_ADDR:MASTER_PORT. A world of one process needs no network: it uses an
// in-process c10d::HashStore, so it never binds a port (and two single-process
// programs on one host cannot collide on MASTER_PORT).
//
// The namespace is dcp::dist (like the CMake target dcp::dist), not
// dcp::libtorch: a namespace dcp::libtorch would shadow ::torch for all code inside
// namespace dcp.
//
// This header keeps c10d out of the includes: it forward-declares
// c10d::ProcessGroup and c10d::Store. To call methods on the returned groups,
// or to copy the intrusive pointers, include
// <torch/csrc/distributed/c10d/ProcessGroup.hpp> (and Store.hpp for the store).
#pragma once

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <memory>
#include <string>

#include "dcp/collectives.h"
#include "dcp/export.h"

namespace c10d {
class ProcessGroup;
class Store;
}  // namespace c10d

namespace dcp {
namespace dist {

// Where this process sits in the job, as its launcher described it.
struct DCP_DIST_EXPORT DistEnvironment {
  int rank = 0;        // this process, in [0, world_size)
  int world_size = 1;  // number of processes in the job
  int local_rank = 0;  // this process among those on the same host
  // Address and port of rank 0's TCPStore server (MASTER_ADDR / MASTER_PORT).
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // The launcher the values came from: "torchrun", "mpirun", "srun" or "none".
  std::string source = "none";
};

// Reads the environment a launcher set, trying in this order:
//   torchrun (and scripts/launch.sh): RANK, WORLD_SIZE, LOCAL_RANK
//   mpirun (Open MPI):                OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
//                                     OMPI_COMM_WORLD_LOCAL_RANK
//   srun (Slurm):                     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
// A style applies when its rank or its size variable is set; then both must be
// set. The local rank is optional and defaults to the rank (right on a single
// host). With none of them set, the process is rank 0 of 1 (source "none").
// MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default 29500) are read for
// every style: under mpirun or srun on several hosts, export them yourself.
//
// Note for Slurm: a batch script itself (outside srun) also has SLURM_PROCID=0
// and SLURM_NTASKS set, and would wait for SLURM_NTASKS ranks that never come;
// start the program with srun.
//
// Throws ConfigError naming the variable and its value when a value is not a
// decimal integer, is negative, a rank is not below the world size, the world
// size is below 1, MASTER_PORT is outside 1..65535 or MASTER_ADDR is empty.
DCP_DIST_EXPORT DistEnvironment detect_environment();

struct DCP_DIST_EXPORT ProcessGroupOptions {
  // How long rendezvous (TCPStore connection, waiting for all ranks, Gloo
  // connection setup) and each collective may take before it fails with an
  // error instead of waiting on a peer that died or hangs. Default 60 s.
  // Shorter detects a dead rank sooner; too short fails collectives that are
  // merely slow (large payloads, a rank still writing its shard) and
  // rendezvous of a job whose ranks start far apart in time.
  std::chrono::milliseconds timeout{60000};

  // The network interface Gloo binds to ("lo", "eth0", "ib0", ...). Empty
  // (the default) means: $DCP_GLOO_IFNAME, else $GLOO_SOCKET_IFNAME, else "lo".
  // Loopback works only when every rank is on this host; a job over several
  // hosts must name an interface the hosts reach each other through.
  std::string interface;

  // A hostname or address Gloo binds to instead of an interface. Empty (the
  // default) uses `interface`; when set it wins over `interface`. Useful when
  // interface names differ between hosts but each host's name resolves to
  // the right address.
  std::string hostname;
};

// The store and the process groups of one process.
//
// Thread safety: new_group() may be called from any thread; each returned
// group follows c10d's rule (collectives on one group are issued in the same
// order on every rank, so issue them from one thread at a time). Different
// groups may run collectives concurrently from different threads.
//
// Lifetime: the groups and the store are reference-counted. Destroying the
// context drops its references; groups returned by new_group() (and copies of
// process_group()) keep the store alive. On rank 0 the store is the TCPStore
// server: the other ranks need it while they create groups, so rank 0 should
// not tear down its context before they are done (end with a barrier).
class DCP_DIST_EXPORT DistContext {
 public:
  // Collective: every rank of `env` calls it. Rank 0 serves a TCPStore on
  // env.master_addr:env.master_port and waits for env.world_size ranks; the
  // others connect to it (retrying until options.timeout). Then all ranks
  // connect a ProcessGroupGloo (the "main group").
  //
  // Throws InvalidArgumentError for an inconsistent `env` or options (rank
  // outside the world, port outside 1..65535, timeout not positive),
  // ConfigError when the store cannot be served or the Gloo device created
  // (port in use, unknown interface), TimeoutError when the other ranks do not
  // arrive within options.timeout.
  static std::unique_ptr<DistContext> init(const DistEnvironment& env,
                                           const ProcessGroupOptions& options = {});

  ~DistContext();
  DistContext(const DistContext&) = delete;
  DistContext& operator=(const DistContext&) = delete;

  int rank() const;
  int world_size() const;
  const DistEnvironment& environment() const;
  // The options with `interface` resolved from the environment.
  const ProcessGroupOptions& options() const;

  // The rendezvous store (TCPStore, or HashStore for a world of one).
  const c10::intrusive_ptr<c10d::Store>& store() const;
  // The main group: a ProcessGroupGloo over all ranks.
  const c10::intrusive_ptr<c10d::ProcessGroup>& process_group() const;

  // Collective: another ProcessGroupGloo over the same ranks, rendezvoused
  // through the same store under a c10d::PrefixStore of `name`. Its
  // collectives are independent of the main group's (separate connections
  // and sequence numbers), so a background thread (async checkpointing) can
  // run them while the trainer uses the main group.
  //
  // Every rank calls it with the same name. Throws InvalidArgumentError for an
  // empty name or one this context already used (the store keys of a name
  // can serve one rendezvous only); ConfigError/TimeoutError as init().
  c10::intrusive_ptr<c10d::ProcessGroup> new_group(const std::string& name);

  // The main group as dcp::Collectives, for SaveOptions/LoadOptions: each
  // checkpoint collective waits at most `timeout` for the other ranks.
  std::shared_ptr<Collectives> collectives(
      std::chrono::milliseconds timeout = std::chrono::minutes(10)) const;
  // new_group(name) as dcp::Collectives: give it to async saves (it is used
  // by their background thread only).
  std::shared_ptr<Collectives> new_collectives(
      const std::string& name, std::chrono::milliseconds timeout = std::chrono::minutes(10));

 private:
  struct Impl;
  explicit DistContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dist
}  // namespace dcp
