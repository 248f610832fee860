// DistContext: a c10d store and Gloo process groups over it.
//
// Rendezvous, in order (world_size > 1):
//   1. Ranks other than 0 wait until something accepts connections on
//      MASTER_ADDR:MASTER_PORT, trying every 20 ms until the timeout. (The
//      TCPStore client of LibTorch 1.13 retries only once a second, and not at
//      all when the timeout is under 2 s.)
//   2. Rank 0 serves a TCPStore there; every rank connects to it.
//   3. Every rank adds 1 to dcp/joined; the rank that brings it to world_size
//      sets dcp/all_joined, which all wait for. (The TCPStore's own wait for
//      its workers gives up silently after the timeout and carries on.)
//   4. Every rank connects the Gloo main group.
//
// Key layout in the store (the root keyspace stays free for callers):
//   dcp/joined, dcp/all_joined   step 3
//   dcp/default_pg/...      rendezvous of the main group
//   dcp/group/<name>/...    rendezvous of new_group(name)
// A prefix serves one rendezvous only: ProcessGroupGloo publishes each rank's
// address under it and a second group under the same prefix would read the
// first one's addresses, so names are never reused.
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "dcp/dist/process_group.h"
#include "dcp/error.h"
#include "dcp/logging.h"
#include "dcp/thread_annotations.h"

namespace dcp {
namespace dist {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kMainPrefix = "dcp/default_pg";
constexpr const char* kGroupPrefix = "dcp/group/";

std::string message_of(const std::exception& e) {
  // c10::Error's what() carries a backtrace; the first lines say what happened.
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

// Rethrows a c10d failure as a dcp::Error whose message says what was being
// done. As for collectives (dcp's c10d adapter), the time it took tells a
// timeout from another failure; c10d's message text is not searched.
[[noreturn]] void rethrow(const std::string& doing, const std::exception& e,
                          std::chrono::milliseconds timeout, Clock::time_point start) {
  const std::string what = message_of(e);
  if (Clock::now() - start >= timeout * 9 / 10)
    throw TimeoutError(doing + " did not complete within " + std::to_string(timeout.count()) +
                       " ms (ProcessGroupOptions::timeout): " + what);
  throw ConfigError(doing + " failed: " + what);
}

struct ResolvedInterface {
  std::string name;
  std::string origin;  // where the name came from, for error messages
};

ResolvedInterface resolve_interface(const ProcessGroupOptions& options) {
  if (!options.interface.empty()) return {options.interface, "ProcessGroupOptions::interface"};
  for (const char* var : {"DCP_GLOO_IFNAME", "GLOO_SOCKET_IFNAME"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return {v, std::string("environment variable ") + var};
  }
  return {"lo", "the default"};
}

// True when a TCP connection to host:port succeeds before `deadline`.
bool try_connect(const std::string& host, int port, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool ok = false;
  for (addrinfo* a = found; a != nullptr && !ok; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      const int wait_ms = static_cast<int>(std::clamp<int64_t>(left, 0, 1000));
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::poll(&p, 1, wait_ms) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
           err == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

// Step 1 of the rendezvous.
void wait_for_server(const DistEnvironment& env, Clock::time_point deadline,
                     std::chrono::milliseconds timeout) {
  while (!try_connect(env.master_addr, env.master_port, deadline)) {
    if (Clock::now() >= deadline)
      throw TimeoutError("rank " + std::to_string(env.rank) + " of " +
                         std::to_string(env.world_size) + " found no TCPStore at " +
                         env.master_addr + ":" + std::to_string(env.master_port) +
                         " (MASTER_ADDR:MASTER_PORT) within " + std::to_string(timeout.count()) +
                         " ms (ProcessGroupOptions::timeout); is rank 0 running, and are the "
                         "address and port right?");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Step 3 of the rendezvous.
void wait_for_all_ranks(c10d::Store& store, const DistEnvironment& env, Clock::time_point deadline,
                        std::chrono::milliseconds timeout, const std::string& where) {
  if (store.add("dcp/joined", 1) == env.world_size) store.set("dcp/all_joined", {1});
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  try {
    store.wait({"dcp/all_joined"}, std::max(left, std::chrono::milliseconds(1)));
  } catch (const std::exception&) {
    int64_t joined = -1;
    try {
      joined = store.add("dcp/joined", 0);
    } catch (const std::exception&) {
    }
    throw TimeoutError(
        "rendezvous at " + where + " (rank " + std::to_string(env.rank) + " of " +
        std::to_string(env.world_size) + "): " +
        (joined < 0
             ? std::string("the store stopped answering")
             : std::to_string(joined) + " of " + std::to_string(env.world_size) + " ranks joined") +
        " within " + std::to_string(timeout.count()) + " ms (ProcessGroupOptions::timeout)");
  }
}

}  // namespace

struct DistContext::Impl {
  DistEnvironment env;
  ProcessGroupOptions options;
  std::string device_origin;  // "interface 'lo' (the default)", for error messages
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> main_group;

  Mutex mu;
  std::set<std::string> group_names DCP_GUARDED_BY(mu);

  c10::intrusive_ptr<c10d::ProcessGroup> make_group(const std::string& prefix,
                                                    const std::string& what) {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
    try {
      gloo_options->devices.push_back(
          options.hostname.empty()
              ? c10d::ProcessGroupGloo::createDeviceForInterface(options.interface)
              : c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname));
    } catch (const std::exception& e) {
      throw ConfigError("creating the Gloo device for " + device_origin +
                        " failed: " + message_of(e));
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    const auto start = Clock::now();
    try {
      return c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size,
                                                         gloo_options);
    } catch (const std::exception& e) {
      rethrow("connecting " + what + " (Gloo, rank " + std::to_string(env.rank) + " of " +
                  std::to_string(env.world_size) + ", " + device_origin + ")",
              e, options.timeout, start);
    }
  }
};

DistContext::DistContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DistContext::~DistContext() = default;

std::unique_ptr<DistContext> DistContext::init(const DistEnvironment& env,
                                               const ProcessGroupOptions& options) {
  const auto n = [](auto v) { return std::to_string(v); };
  if (env.world_size < 1)
    throw InvalidArgumentError("DistEnvironment::world_size=" + n(env.world_size) +
                               " must be at least 1");
  if (env.rank < 0 || env.rank >= env.world_size)
    throw InvalidArgumentError("DistEnvironment::rank=" + n(env.rank) + " is outside [0, " +
                               n(env.world_size) + ")");
  if (env.local_rank < 0)
    throw InvalidArgumentError("DistEnvironment::local_rank=" + n(env.local_rank) + " is negative");
  if (env.world_size > 1 && (env.master_port < 1 || env.master_port > 65535))
    throw InvalidArgumentError("DistEnvironment::master_port=" + n(env.master_port) +
                               " is not a TCP port (1..65535)");
  if (env.world_size > 1 && env.master_addr.empty())
    throw InvalidArgumentError("DistEnvironment::master_addr is empty");
  if (options.timeout.count() <= 0)
    throw InvalidArgumentError("ProcessGroupOptions::timeout=" + n(options.timeout.count()) +
                               " ms must be positive");

  const auto start = Clock::now();
  const auto deadline = start + options.timeout;
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  impl->options = options;
  const ResolvedInterface iface = resolve_interface(options);
  impl->options.interface = iface.name;
  impl->device_origin = options.hostname.empty()
                            ? "interface '" + iface.name + "' (" + iface.origin + ")"
                            : "hostname '" + options.hostname + "' (ProcessGroupOptions::hostname)";

  const std::string where = env.master_addr + ":" + n(env.master_port);
  if (env.world_size == 1) {
    // No peer to find: an in-process store, so a single process never binds
    // (or collides on) MASTER_PORT.
    impl->store = c10::make_intrusive<c10d::HashStore>();
    impl->store->setTimeout(options.timeout);
  } else {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = static_cast<std::size_t>(env.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = options.timeout;
    if (env.rank != 0) wait_for_server(env, deadline, options.timeout);
    const auto start = Clock::now();
    try {
      impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
    } catch (const std::exception& e) {
      rethrow(std::string(env.rank == 0 ? "serving" : "joining") + " the TCPStore on " + where +
                  " (MASTER_ADDR:MASTER_PORT, rank " + n(env.rank) + " of " + n(env.world_size) +
                  ")",
              e, options.timeout, start);
    }
    wait_for_all_ranks(*impl->store, env, deadline, options.timeout, where);
  }
  impl->main_group = impl->make_group(kMainPrefix, "the main process group");

  if (env.rank == 0) {
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    logger().info("process group ready: {} rank(s) ({} launch), Gloo on {}, store {}, {:.2f} s",
                  env.world_size, env.source, impl->device_origin,
                  env.world_size == 1 ? std::string("in-process") : where, secs);
  }
  return std::unique_ptr<DistContext>(new DistContext(std::move(impl)));
}

int DistContext::rank() const { return impl_->env.rank; }
int DistContext::world_size() const { return impl_->env.world_size; }
const DistEnvironment& DistContext::environment() const { return impl_->env; }
const ProcessGroupOptions& DistContext::options() const { return impl_->options; }
const c10::intrusive_ptr<c10d::Store>& DistContext::store() const { return impl_->store; }
const c10::intrusive_ptr<c10d::ProcessGroup>& DistContext::process_group() const {
  return impl_->main_group;
}

c10::intrusive_ptr<c10d::ProcessGroup> DistContext::new_group(const std::string& name) {
  if (name.empty()) throw InvalidArgumentError("new_group: the group name is empty");
  {
    MutexLock lock(impl_->mu);
    if (!impl_->group_names.insert(name).second)
      throw InvalidArgumentError("new_group: name='" + name +
                                 "' was already used by this context; each group needs its "
                                 "own name");
  }
  return impl_->make_group(kGroupPrefix + name, "process group '" + name + "'");
}

std::shared_ptr<Collectives> DistContext::collectives(std::chrono::milliseconds timeout) const {
  return make_process_group_collectives(process_group(), timeout);
}

std::shared_ptr<Collectives> DistContext::new_collectives(const std::string& name,
                                                          std::chrono::milliseconds timeout) {
  return make_process_group_collectives(new_group(name), timeout);
}

}  // namespace dist
}  // namespace dcp
