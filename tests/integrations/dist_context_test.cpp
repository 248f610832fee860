// DistContext in this process: a world of one, argument checks, and
// rendezvous that fails in time when the other ranks never come.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "common/multiproc.h"
#include "dcp/dist/process_group.h"
#include "dcp/error.h"

namespace {

using dcp::dist::DistContext;
using dcp::dist::DistEnvironment;
using dcp::dist::ProcessGroupOptions;
using Clock = std::chrono::steady_clock;

// Runs `fn`, expecting an exception of type E whose message contains `needle`.
template <typename E, typename Fn>
void expect_throw_with(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Unsets the interface variables for the test, restoring them after.
class DistContextLocal : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"DCP_GLOO_IFNAME", "GLOO_SOCKET_IFNAME"}) {
      if (const char* old = std::getenv(v)) saved_.emplace_back(v, old);
      ::unsetenv(v);
    }
  }
  void TearDown() override {
    ::unsetenv("DCP_GLOO_IFNAME");
    ::unsetenv("GLOO_SOCKET_IFNAME");
    for (const auto& kv : saved_) ::setenv(kv.first.c_str(), kv.second.c_str(), 1);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
};

TEST_F(DistContextLocal, WorldOfOneNeedsNoPeers) {
  DistEnvironment env;  // rank 0 of 1
  // A port nobody serves: a world of one must not need it.
  env.master_port = dcp::testing::free_port();
  auto ctx = DistContext::init(env);
  EXPECT_EQ(ctx->rank(), 0);
  EXPECT_EQ(ctx->world_size(), 1);
  EXPECT_EQ(ctx->options().interface, "lo");
  EXPECT_EQ(ctx->process_group()->getSize(), 1);
  EXPECT_EQ(ctx->process_group()->getBackendName(), "gloo");

  std::vector<at::Tensor> t{at::arange(5, at::kFloat)};
  ctx->process_group()->allreduce(t)->wait();
  EXPECT_TRUE(at::equal(t[0], at::arange(5, at::kFloat)));

  auto side = ctx->new_group("side");
  ASSERT_TRUE(side);
  EXPECT_NE(side.get(), ctx->process_group().get());
  std::vector<at::Tensor> b{at::full({3}, 7, at::kLong)};
  side->broadcast(b)->wait();
  EXPECT_EQ(b[0].sum().item<int64_t>(), 21);

  // The store is usable by the caller; our own keys live under "dcp/".
  ctx->store()->set("user_key", std::vector<uint8_t>{1, 2, 3});
  EXPECT_EQ(ctx->store()->get("user_key"), (std::vector<uint8_t>{1, 2, 3}));
}

TEST_F(DistContextLocal, GroupNamesAreNotReused) {
  auto ctx = DistContext::init(DistEnvironment{});
  ctx->new_group("async");
  expect_throw_with<dcp::InvalidArgumentError>([&] { ctx->new_group("async"); }, "'async'");
  expect_throw_with<dcp::InvalidArgumentError>([&] { ctx->new_group(""); }, "empty");
  EXPECT_TRUE(ctx->new_group("async2"));
}

TEST_F(DistContextLocal, InvalidEnvironmentOrOptions) {
  DistEnvironment env;
  env.world_size = 2;
  env.rank = 2;
  expect_throw_with<dcp::InvalidArgumentError>([&] { DistContext::init(env); }, "rank=2");
  env.rank = -1;
  expect_throw_with<dcp::InvalidArgumentError>([&] { DistContext::init(env); }, "rank=-1");
  env.rank = 0;
  env.world_size = 0;
  expect_throw_with<dcp::InvalidArgumentError>([&] { DistContext::init(env); }, "world_size=0");
  env.world_size = 2;
  env.master_port = 0;
  expect_throw_with<dcp::InvalidArgumentError>([&] { DistContext::init(env); }, "master_port=0");
  ProcessGroupOptions options;
  options.timeout = std::chrono::milliseconds(0);
  expect_throw_with<dcp::InvalidArgumentError>(
      [&] { DistContext::init(DistEnvironment{}, options); }, "timeout=0");
}

TEST_F(DistContextLocal, UnknownInterfaceIsConfigError) {
  ProcessGroupOptions options;
  options.interface = "nosuchif0";
  expect_throw_with<dcp::ConfigError>([&] { DistContext::init(DistEnvironment{}, options); },
                                      "'nosuchif0' (ProcessGroupOptions::interface)");
}

TEST_F(DistContextLocal, InterfaceFromEnvironment) {
  ::setenv("GLOO_SOCKET_IFNAME", "nosuchif1", 1);
  expect_throw_with<dcp::ConfigError>([&] { DistContext::init(DistEnvironment{}); },
                                      "'nosuchif1' (environment variable GLOO_SOCKET_IFNAME)");
  // DCP_GLOO_IFNAME comes first.
  ::setenv("DCP_GLOO_IFNAME", "lo", 1);
  auto ctx = DistContext::init(DistEnvironment{});
  EXPECT_EQ(ctx->options().interface, "lo");
}

TEST_F(DistContextLocal, HostnameInsteadOfInterface) {
  ProcessGroupOptions options;
  options.interface = "nosuchif2";  // ignored: the hostname wins
  options.hostname = "127.0.0.1";
  auto ctx = DistContext::init(DistEnvironment{}, options);
  std::vector<at::Tensor> t{at::ones({2})};
  ctx->process_group()->allreduce(t)->wait();
  EXPECT_EQ(t[0].sum().item<float>(), 2.0f);
}

// Rank 1 of 2 with no rank 0 serving the store: a TimeoutError after about
// the timeout, not a hang.
TEST_F(DistContextLocal, MissingServerTimesOut) {
  DistEnvironment env;
  env.world_size = 2;
  env.rank = 1;
  env.master_port = dcp::testing::free_port();
  ProcessGroupOptions options;
  options.timeout = std::chrono::milliseconds(1500);
  const auto start = Clock::now();
  expect_throw_with<dcp::TimeoutError>(
      [&] { DistContext::init(env, options); },
      "found no TCPStore at 127.0.0.1:" + std::to_string(env.master_port));
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GE(secs, 1.0);
  EXPECT_LT(secs, 6.0);
}

// Rank 0 of 2 whose peer never joins: the server gives up after the timeout.
TEST_F(DistContextLocal, MissingWorkerTimesOut) {
  DistEnvironment env;
  env.world_size = 2;
  env.master_port = dcp::testing::free_port();
  ProcessGroupOptions options;
  options.timeout = std::chrono::milliseconds(1500);
  const auto start = Clock::now();
  expect_throw_with<dcp::TimeoutError>([&] { DistContext::init(env, options); },
                                       "1 of 2 ranks joined within 1500 ms");
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GE(secs, 1.0);
  EXPECT_LT(secs, 6.0);
}

}  // namespace
