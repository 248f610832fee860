// dcp::libtorch::OptimizerState's PyTorch layout against Python itself (Debian's
// /usr/bin/python3 with PyTorch 1.13, run at test time): for each supported
// optimizer, py_optim_state.py takes 3 steps from the initial weights and
// on the data this test writes, as LibTorch does here; the two states
// agree element by element (float tolerance), and so do the param groups'
// keys and values; Python's state, loaded through the adapter (dcp::save of
// the dict built from Python's files, then dcp::load; and Python's
// torch.save file read by dcp::load), continues as Python's does: one more
// step gives the same parameters.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/adapters.h"
#include "torch_test_net.h"

namespace {

using namespace dcp_torch_test;
using dcp::libtorch::OptimizerLayout;
using dcp::libtorch::OptimizerState;
using dcp::libtorch::OptimizerStateOptions;
using dcp::testing::TempDir;
using torch::optim::OptimizerParamGroup;

constexpr const char kPython[] = "/usr/bin/python3";  // Debian's, with python3-torch
constexpr int kSteps = 3;

bool have_python_torch() {
  static const bool have =
      std::system((std::string(kPython) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  return have;
}

OptimizerStateOptions pytorch_layout() {
  OptimizerStateOptions o;
  o.layout = OptimizerLayout::kPyTorch;
  return o;
}

// --- the exchange with py_optim_state.py (its docstring has the format) ------------

std::string shape_field(const at::Tensor& t) {
  if (t.dim() == 0) return "-";
  std::string s;
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "," : "") + std::to_string(t.size(d));
  return s;
}

at::ScalarType dtype_of(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "int64") return torch::kInt64;
  throw std::runtime_error("dtype " + name);
}

// Raw little-endian data (this test runs on little-endian machines).
void write_tensor(const std::string& path, const at::Tensor& t) {
  const at::Tensor c = t.detach().contiguous();
  std::ofstream(path, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

at::Tensor read_tensor(const std::string& path, const std::string& dtype,
                       const std::string& shape) {
  std::vector<int64_t> sizes;
  if (shape != "-") {
    std::stringstream ss(shape);
    for (std::string d; std::getline(ss, d, ',');) sizes.push_back(std::stoll(d));
  }
  at::Tensor t = torch::empty(sizes, dtype_of(dtype));
  const std::string data = dcp::testing::read_file(path);
  EXPECT_EQ(data.size(), t.nbytes()) << path;
  std::memcpy(t.data_ptr(), data.data(), std::min(data.size(), t.nbytes()));
  return t;
}

// The inputs: the net's initial parameters and the data of every step.
void write_inputs(const std::string& dir, NetImpl& net) {
  std::string manifest;
  int n = 0;
  auto put = [&](const std::string& name, const at::Tensor& t) {
    const std::string file = "t" + std::to_string(n++) + ".bin";
    write_tensor(dir + "/" + file, t);
    manifest += name + " float32 " + shape_field(t) + " " + file + "\n";
  };
  for (const auto& p : net.named_parameters()) put("param." + p.key(), p.value());
  for (int i = 0; i <= kSteps; ++i) {
    auto [x, y] = batch(i);
    put("x." + std::to_string(i), x);
    put("y." + std::to_string(i), y);
  }
  dcp::testing::write_file(dir + "/manifest.txt", manifest);
}

dcp::Value from_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return {};
    case nlohmann::json::value_t::boolean:
      return j.get<bool>();
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return j.get<int64_t>();
    case nlohmann::json::value_t::number_float:
      return j.get<double>();
    case nlohmann::json::value_t::string:
      return j.get<std::string>();
    case nlohmann::json::value_t::array: {
      dcp::List l;
      for (const auto& e : j) l.push_back(from_json(e));
      return l;
    }
    case nlohmann::json::value_t::object: {
      dcp::Dict d;
      for (const auto& [k, v] : j.items()) d.emplace(k, from_json(v));
      return d;
    }
    default:
      throw std::runtime_error("unexpected JSON " + j.dump());
  }
}

// What Python wrote for one case.
struct PythonRun {
  dcp::StateDict optimizer;  // {"state": {"<i>": {...}}, "param_groups": [...]}, as Python's
  std::map<std::string, at::Tensor> param3, param4;  // the parameters after 3 and 4 steps
  std::string torch_save_file;                       // torch.save(optimizer.state_dict())
};

PythonRun read_outputs(const std::string& dir) {
  PythonRun run;
  dcp::Dict state;
  std::istringstream manifest(dcp::testing::read_file(dir + "/manifest.txt"));
  for (std::string line; std::getline(manifest, line);) {
    std::istringstream ls(line);
    std::string what, key;
    ls >> what >> key;
    dcp::Value v;
    if (what == "tensor") {
      std::string dtype, shape, file;
      ls >> dtype >> shape >> file;
      v = read_tensor(dir + "/" + file, dtype, shape);
    } else if (what == "int") {
      int64_t i = 0;
      ls >> i;
      v = i;
    } else {
      EXPECT_EQ(what, "none") << line;
    }
    const size_t slash = key.find('/');
    const std::string head = key.substr(0, slash), rest = key.substr(slash + 1);
    if (head == "param3" || head == "param4") {
      (head == "param3" ? run.param3 : run.param4)[rest] = v.tensor();
      continue;
    }
    if (head != "state") {
      ADD_FAILURE() << "unexpected line " << line;
      continue;
    }
    const size_t slash2 = rest.find('/');
    auto& entry = state[rest.substr(0, slash2)];
    if (entry.is_none()) entry = dcp::Dict{};
    entry.dict()[rest.substr(slash2 + 1)] = v;
  }
  run.optimizer["state"] = std::move(state);
  run.optimizer["param_groups"] =
      from_json(nlohmann::json::parse(dcp::testing::read_file(dir + "/param_groups.json")));
  run.torch_save_file = dir + "/state.pt";
  return run;
}

// --- the cases: one optimizer each, as LibTorch and as Python's arguments ------------

struct RealCase {
  std::string name;
  std::string kind;     // the torch.optim class
  std::string options;  // its keyword arguments, as JSON
  // The LibTorch optimizer over two groups (fc1's parameters; the rest at
  // half the learning rate), the learning rates times `lr_scale`.
  std::function<std::unique_ptr<torch::optim::Optimizer>(NetImpl&, double lr_scale)> make;
};

void PrintTo(const RealCase& c, std::ostream* os) { *os << c.name; }

template <typename Opt, typename Options>
RealCase real_case(std::string name, std::string kind, std::string options_json, Options options) {
  return {std::move(name), std::move(kind), std::move(options_json),
          [options](NetImpl& net, double scale) {
            std::vector<OptimizerParamGroup> groups;
            auto two = two_groups(net);
            for (size_t g = 0; g < two.size(); ++g) {
              auto o = std::make_unique<Options>(options);
              o->lr(options.lr() * scale / (g + 1));
              groups.emplace_back(two[g].params(), std::move(o));
            }
            return std::unique_ptr<torch::optim::Optimizer>(
                std::make_unique<Opt>(std::move(groups), options));
          }};
}

std::vector<RealCase> real_cases() {
  namespace o = torch::optim;
  return {
      real_case<o::SGD>("SGD_momentum_dampening", "SGD",
                        R"({"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.001})",
                        o::SGDOptions(0.05).momentum(0.9).dampening(0.1).weight_decay(1e-3)),
      real_case<o::SGD>("SGD_nesterov", "SGD", R"({"lr": 0.05, "momentum": 0.9, "nesterov": true})",
                        o::SGDOptions(0.05).momentum(0.9).nesterov(true)),
      real_case<o::SGD>("SGD_plain", "SGD", R"({"lr": 0.05})", o::SGDOptions(0.05)),
      real_case<o::Adam>("Adam", "Adam", R"({"lr": 0.01, "weight_decay": 0.001})",
                         o::AdamOptions(1e-2).weight_decay(1e-3)),
      real_case<o::Adam>(
          "Adam_amsgrad", "Adam",
          R"({"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "amsgrad": true})",
          o::AdamOptions(1e-2).betas(std::make_tuple(0.8, 0.99)).eps(1e-6).amsgrad(true)),
      real_case<o::AdamW>("AdamW", "AdamW", R"({"lr": 0.01})", o::AdamWOptions(1e-2)),
      real_case<o::AdamW>("AdamW_amsgrad", "AdamW",
                          R"({"lr": 0.01, "weight_decay": 0.1, "amsgrad": true})",
                          o::AdamWOptions(1e-2).weight_decay(0.1).amsgrad(true)),
      real_case<o::RMSprop>("RMSprop", "RMSprop", R"({"lr": 0.01})", o::RMSpropOptions(1e-2)),
      real_case<o::RMSprop>(
          "RMSprop_centered_momentum", "RMSprop",
          R"({"lr": 0.01, "alpha": 0.9, "centered": true, "momentum": 0.5, "weight_decay": 0.001})",
          o::RMSpropOptions(1e-2).alpha(0.9).centered(true).momentum(0.5).weight_decay(1e-3)),
      real_case<o::Adagrad>("Adagrad", "Adagrad",
                            R"({"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1})",
                            o::AdagradOptions(0.05).lr_decay(0.01).initial_accumulator_value(0.1)),
  };
}

// --- comparisons ---------------------------------------------------------------------

::testing::AssertionResult close(const at::Tensor& a, const at::Tensor& b,
                                 const std::string& what) {
  if (!a.sizes().equals(b.sizes()) || a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << what << ": " << a.sizes() << " " << a.scalar_type()
                                         << " vs " << b.sizes() << " " << b.scalar_type();
  // Float tolerance, relative to the tensor's scale (Adam's exp_avg_sq is
  // ~1e-6). (With Debian's packages Python and LibTorch run the same
  // libtorch_cpu, and the values agree bit for bit.)
  const double scale = b.numel() ? b.abs().max().item<double>() : 0.0;
  if (torch::allclose(a, b, /*rtol=*/1e-5, /*atol=*/1e-6 * scale))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << " differs by up to " << (a - b).abs().max().item<double>();
}

::testing::AssertionResult same_params(NetImpl& net, const std::map<std::string, at::Tensor>& py,
                                       const std::string& when) {
  for (const auto& p : net.named_parameters()) {
    auto it = py.find(p.key());
    if (it == py.end()) return ::testing::AssertionFailure() << "Python has no " << p.key();
    auto r = close(p.value().detach(), it->second, when + " " + p.key());
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

// A plain value for messages: numbers in full.
std::string show(const dcp::Value& v) {
  if (v.kind() != dcp::Value::Kind::kDouble) return dcp::describe(v);
  std::ostringstream os;
  os.precision(17);
  os << "double " << v.to_double();
  return os.str();
}

// Two plain values of a param group: numbers by value (Python's 0 is an
// int, LibTorch's 0.0 a double), lists element by element.
bool same_plain(const dcp::Value& a, const dcp::Value& b) {
  using K = dcp::Value::Kind;
  auto number = [](const dcp::Value& v) { return v.kind() == K::kInt || v.kind() == K::kDouble; };
  if (number(a) && number(b)) return a.to_double() == b.to_double();
  if (a.is_list() && b.is_list()) {
    if (a.list().size() != b.list().size()) return false;
    for (size_t i = 0; i < a.list().size(); ++i)
      if (!same_plain(a.list()[i], b.list()[i])) return false;
    return true;
  }
  return a.equals(b);
}

// A state value of LibTorch's kPyTorch state_dict() against Python's: the
// same kind (a tensor of the same dtype, an int, none), close values.
::testing::AssertionResult same_state_value(const dcp::Value& cpp, const dcp::Value& py,
                                            const std::string& what) {
  if (cpp.kind() != py.kind())
    return ::testing::AssertionFailure()
           << what << ": LibTorch " << dcp::describe(cpp) << ", Python " << dcp::describe(py);
  if (py.is_tensor()) return close(cpp.tensor(), py.tensor(), what);
  if (!cpp.equals(py))
    return ::testing::AssertionFailure()
           << what << ": " << dcp::describe(cpp) << " vs " << dcp::describe(py);
  return ::testing::AssertionSuccess();
}

// LibTorch's state after the same steps is Python's: every entry Python has,
// field by field; for the parameters Python has none of (no gradient yet),
// LibTorch has none either; and the param groups have the same keys (the
// Python-only options included) and values.
void expect_state_is_pythons(torch::optim::Optimizer& opt, NetImpl& net, const PythonRun& py) {
  const dcp::StateDict sd = OptimizerState(opt, net, pytorch_layout()).state_dict();
  const dcp::Dict& cpp_state = sd.at("state").dict();
  const dcp::Dict& py_state = py.optimizer.at("state").dict();
  const auto params = net.parameters();
  size_t with_state = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string index = std::to_string(i);
    const bool lt_has = opt.state().count(c10::guts::to_string(params[i].unsafeGetTensorImpl()));
    auto it = py_state.find(index);
    if (it == py_state.end()) {
      EXPECT_FALSE(lt_has) << "parameter " << i << ": LibTorch has state, Python none";
      continue;
    }
    const dcp::Dict& py_entry = it->second.dict();
    const dcp::Dict& cpp_entry = cpp_state.at(index).dict();
    std::vector<std::string> py_keys, cpp_keys;
    for (const auto& kv : py_entry) py_keys.push_back(kv.first);
    for (const auto& kv : cpp_entry) cpp_keys.push_back(kv.first);
    EXPECT_EQ(cpp_keys, py_keys) << "parameter " << i;
    bool none_buffer = false;
    for (const auto& [field, v] : py_entry) {
      none_buffer = none_buffer || v.is_none();
      if (cpp_entry.count(field))
        EXPECT_TRUE(same_state_value(cpp_entry.at(field), v, index + "." + field));
    }
    EXPECT_EQ(lt_has, !none_buffer) << "parameter " << i;  // SGD's None buffer: no state
    with_state += lt_has;
  }
  EXPECT_EQ(opt.state().size(), with_state);

  const dcp::List& cpp_groups = sd.at("param_groups").list();
  const dcp::List& py_groups = py.optimizer.at("param_groups").list();
  ASSERT_EQ(cpp_groups.size(), py_groups.size());
  for (size_t g = 0; g < py_groups.size(); ++g) {
    std::vector<std::string> py_keys, cpp_keys;
    for (const auto& kv : py_groups[g].dict()) py_keys.push_back(kv.first);
    for (const auto& kv : cpp_groups[g].dict()) cpp_keys.push_back(kv.first);
    EXPECT_EQ(cpp_keys, py_keys) << "param group " << g;
    for (const auto& [key, v] : py_groups[g].dict())
      if (cpp_groups[g].dict().count(key))
        EXPECT_TRUE(same_plain(cpp_groups[g].dict().at(key), v))
            << "param group " << g << " '" << key << "': LibTorch "
            << show(cpp_groups[g].dict().at(key)) << ", Python " << show(v);
  }
}

// The loaded LibTorch state holds Python's values exactly.
void expect_loaded_exactly(torch::optim::Optimizer& opt, NetImpl& net, const PythonRun& py) {
  const dcp::StateDict sd = OptimizerState(opt, net, pytorch_layout()).state_dict();
  for (const auto& [index, entry] : py.optimizer.at("state").dict())
    for (const auto& [field, v] : entry.dict()) {
      const dcp::Value& mine = sd.at("state").dict().at(index).dict().at(field);
      if (v.is_tensor())
        EXPECT_TRUE(mine.is_tensor() && torch::equal(mine.tensor(), v.tensor()))
            << index << "." << field;
      else
        EXPECT_TRUE(mine.equals(v)) << index << "." << field;
    }
}

class TorchOptimizerAgainstPython : public ::testing::TestWithParam<RealCase> {};

TEST_P(TorchOptimizerAgainstPython, SameStepsSameStateAndPythonsStateLoads) {
  // CI installs python3-torch (scripts/install-deps.sh): no torch is a failure, not a skip.
  ASSERT_TRUE(have_python_torch()) << kPython << " cannot import torch";
  const RealCase& c = GetParam();
  TempDir dir;
  const std::string in = dir.sub("in"), out = dir.sub("out");
  std::filesystem::create_directories(in);
  std::filesystem::create_directories(out);

  auto a = make_net(1);
  write_inputs(in, *a);
  dcp::testing::write_file(in + "/cases.json", R"([{"name": ")" + c.name + R"(", "kind": ")" +
                                                   c.kind + R"(", "options": )" + c.options +
                                                   R"(, "steps": )" + std::to_string(kSteps) +
                                                   "}]");
  const std::string cmd = std::string(kPython) + " " + DCP_PY_OPTIM_STATE + " " + in + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const PythonRun py = read_outputs(out + "/" + c.name);

  // The same steps in LibTorch: the same parameters and state.
  auto opt_a = c.make(*a, 1.0);
  for (int i = 0; i < kSteps; ++i) train_step(*a, *opt_a, i, false);
  EXPECT_TRUE(same_params(*a, py.param3, "after 3 steps"));
  expect_state_is_pythons(*opt_a, *a, py);

  // Python's state into a fresh LibTorch optimizer (other learning rates),
  // through dcp::save of Python's dict and dcp::load into the adapter.
  // Non-strict: Python has no entries for aux's parameters (no gradient
  // yet); those are the missing keys.
  save_to({{"optim", py.optimizer}}, dir.sub("ckpt"));
  auto b = make_net(2);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : b->named_parameters()) p.value().copy_(py.param3.at(p.key()));
  }
  auto opt_b = c.make(*b, 3.0);
  dcp::StateDict sd{{"optim", std::make_shared<OptimizerState>(*opt_b, *b, pytorch_layout())}};
  dcp::LoadOptions lo;
  lo.checkpoint_id = dir.sub("ckpt");
  lo.strict = false;
  const dcp::LoadResult r = dcp::load(sd, lo);
  EXPECT_TRUE(r.unexpected_keys.empty()) << r.unexpected_keys.front();
  for (const auto& key : r.missing_keys)
    EXPECT_TRUE(key.rfind("optim.state.6.", 0) == 0 || key.rfind("optim.state.7.", 0) == 0) << key;
  expect_loaded_exactly(*opt_b, *b, py);
  expect_state_is_pythons(*opt_b, *b, py);  // the hyper-parameters too
  EXPECT_EQ(opt_b->state().size(), opt_a->state().size());

  // Loaded directly, without dcp::load: the same.
  auto opt_c = c.make(*b, 3.0);
  OptimizerState(*opt_c, *b, pytorch_layout()).load_state_dict(py.optimizer);
  EXPECT_TRUE(OptimizerState(*opt_c, *b)
                  .state_dict()
                  .at("state")
                  .equals(OptimizerState(*opt_b, *b).state_dict().at("state")));

  // Python's torch.save(optimizer.state_dict()) file, read by dcp::load
  // itself under "optim.": the same.
  auto opt_d = c.make(*b, 3.0);
  dcp::StateDict sd_pt{{"optim", std::make_shared<OptimizerState>(*opt_d, *b, pytorch_layout())}};
  dcp::LoadOptions lpt;
  lpt.checkpoint_id = py.torch_save_file;
  lpt.rename = {{"", "optim."}};
  lpt.strict = false;
  const dcp::LoadResult rpt = dcp::load(sd_pt, lpt);
  EXPECT_TRUE(rpt.unexpected_keys.empty()) << rpt.unexpected_keys.front();
  std::vector<std::string> missing = r.missing_keys, missing_pt = rpt.missing_keys;
  std::sort(missing.begin(), missing.end());
  std::sort(missing_pt.begin(), missing_pt.end());
  EXPECT_EQ(missing_pt, missing);
  expect_loaded_exactly(*opt_d, *b, py);
  expect_state_is_pythons(*opt_d, *b, py);

  // One more step, now with aux (its first): LibTorch from Python's state
  // lands where Python did, and so does LibTorch's uninterrupted run.
  train_step(*b, *opt_b, kSteps, true);
  EXPECT_TRUE(same_params(*b, py.param4, "after Python's state and a LibTorch step"));
  train_step(*a, *opt_a, kSteps, true);
  EXPECT_TRUE(same_params(*a, py.param4, "after 4 LibTorch steps"));
}

INSTANTIATE_TEST_SUITE_P(All, TorchOptimizerAgainstPython, ::testing::ValuesIn(real_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
