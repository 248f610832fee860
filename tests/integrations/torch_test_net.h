// What the dcp::libtorch adapter tests share: a small network with parameters,
// buffers and a layer that steps only when asked, deterministic training
// steps, and bit-exact comparisons.
#pragma once

#include <torch/torch.h>

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "dcp/dcp.h"
#include "dcp/libtorch/adapters.h"

namespace dcp_torch_test {

inline bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Parameters and buffers (BatchNorm), and a layer `aux` that takes part only
// when asked: until then it has no gradient, so no optimizer state.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t hidden = 16, double dropout = 0.0) {
    fc1 = register_module("fc1", torch::nn::Linear(8, hidden));
    bn = register_module("bn", torch::nn::BatchNorm1d(hidden));
    drop = register_module("drop", torch::nn::Dropout(dropout));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 4));
    aux = register_module("aux", torch::nn::Linear(8, 4));
  }
  torch::Tensor forward(const torch::Tensor& x, bool use_aux) {
    torch::Tensor y = fc2(drop(torch::relu(bn(fc1(x)))));
    return use_aux ? y + aux(x) : y;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, aux{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Dropout drop{nullptr};
};

inline std::shared_ptr<NetImpl> make_net(uint64_t seed, int64_t hidden = 16, double dropout = 0.0) {
  torch::manual_seed(seed);
  return std::make_shared<NetImpl>(hidden, dropout);
}

// The data of step i depends only on i.
inline std::pair<torch::Tensor, torch::Tensor> batch(int64_t i) {
  at::Generator gen = at::detail::createCPUGenerator(1000 + i);
  return {at::randn({16, 8}, gen), at::randn({16, 4}, gen)};
}

inline void train_step(NetImpl& net, torch::optim::Optimizer& opt, int64_t i, bool use_aux) {
  auto [x, y] = batch(i);
  opt.zero_grad();
  torch::mse_loss(net.forward(x, use_aux), y).backward();
  opt.step();
}

// Every parameter and buffer of `a` equals `b`'s bit for bit; the first
// difference is reported by name.
inline ::testing::AssertionResult same_tensors(const torch::nn::Module& a,
                                               const torch::nn::Module& b) {
  const auto ta = dcp::libtorch::named_tensors(a), tb = dcp::libtorch::named_tensors(b);
  if (ta.size() != tb.size()) return ::testing::AssertionFailure() << "different tensor counts";
  for (size_t i = 0; i < ta.size(); ++i) {
    if (ta[i].first != tb[i].first)
      return ::testing::AssertionFailure() << ta[i].first << " vs " << tb[i].first;
    if (!torch::equal(ta[i].second, tb[i].second))
      return ::testing::AssertionFailure() << "'" << ta[i].first << "' differs";
  }
  return ::testing::AssertionSuccess();
}

// Two param groups: fc1's parameters; the rest.
inline std::vector<torch::optim::OptimizerParamGroup> two_groups(NetImpl& net) {
  std::vector<torch::Tensor> first, rest;
  for (const auto& p : net.named_parameters())
    (p.key().rfind("fc1.", 0) == 0 ? first : rest).push_back(p.value());
  return {torch::optim::OptimizerParamGroup(first), torch::optim::OptimizerParamGroup(rest)};
}

inline void save_to(const dcp::StateDict& sd, const std::string& dir) { dcp::save(sd, dir); }
inline void load_from(dcp::StateDict sd, const std::string& dir) { dcp::load(sd, dir); }

}  // namespace dcp_torch_test
