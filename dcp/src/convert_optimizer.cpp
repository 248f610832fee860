// dcp::convert's optimizer layout: an optimizer state in dcp++'s layout
// (dcp::libtorch::OptimizerState's default, OptimizerLayout::kDcp) rewritten
// as Python's optimizer.state_dict() of PyTorch 1.13, as the adapter's
// OptimizerLayout::kPyTorch gives it (docs/INTEGRATIONS.md). The facts of
// Python's layout are the adapter's (integrations/src/optimizer_traits.cpp:
// kPyStep, kPythonOptions); tests/cli/convert_optimizer_test.cpp checks that
// this rewrite gives what the adapter gives, for every optimizer kind.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>

#include "convert_internal.h"
#include "dcp/error.h"

namespace dcp {
namespace internal {
namespace convert {

namespace {

// A Python-only option of a param group and the value LibTorch behaves as.
struct PythonOption {
  const char* key;
  bool none;  // None (foreach); otherwise False
};

enum class PyStep { kNone, kTensor, kInt };

struct Kind {
  const char* name;
  PyStep step;
  std::vector<PythonOption> options;
};

// Python 1.13's, for each optimizer the adapter supports.
const std::vector<Kind>& kinds() {
  static const std::vector<Kind> k = {
      {"SGD", PyStep::kNone, {{"maximize", false}, {"foreach", true}, {"differentiable", false}}},
      {"Adam",
       PyStep::kTensor,
       {{"maximize", false},
        {"foreach", true},
        {"capturable", false},
        {"differentiable", false},
        {"fused", false}}},
      {"AdamW", PyStep::kTensor, {{"foreach", true}, {"maximize", false}, {"capturable", false}}},
      {"RMSprop",
       PyStep::kInt,
       {{"foreach", true}, {"maximize", false}, {"differentiable", false}}},
      {"Adagrad", PyStep::kTensor, {{"foreach", true}, {"maximize", false}}},
  };
  return k;
}

const Kind* kind_named(const std::string& name) {
  for (const Kind& k : kinds())
    if (name == k.name) return &k;
  return nullptr;
}

// A dict in dcp++'s optimizer layout: "kind" (a known one), "state",
// "params_with_state" and "param_groups".
const Kind* dcp_optimizer(const Dict& d) {
  auto kind = d.find("kind");
  if (kind == d.end() || kind->second.kind() != Value::Kind::kString) return nullptr;
  if (!d.count("state") || !d.count("params_with_state") || !d.count("param_groups"))
    return nullptr;
  return kind_named(kind->second.to_string());
}

void rewrite(Tree& tree, Dict& d, const Kind& kind, const std::string& where) {
  auto fail = [&](const std::string& what) {
    throw InvalidArgumentError("the optimizer state at '" + where + "' (" + kind.name +
                               ", dcp++'s layout): " + what);
  };
  const Value& groups_v = d.at("param_groups");
  const Value& with_v = d.at("params_with_state");
  if (!groups_v.is_list()) fail("'param_groups' is not a list");
  if (!with_v.is_list()) fail("'params_with_state' is not a list");
  Value& state_v = d.at("state");
  if (!state_v.is_dict() && !state_v.is_none()) fail("'state' is not a dict");

  // Python's numbering (torch.optim.Optimizer.state_dict): a parameter's
  // index is its group's start plus its position there; one listed again
  // keeps the index of the first group that has it (in that group its last
  // position).
  std::map<std::string, int64_t> index;
  List groups;
  int64_t start = 0;
  for (size_t g = 0; g < groups_v.list().size(); ++g) {
    const Value& gv = groups_v.list()[g];
    if (!gv.is_dict()) fail("param group " + std::to_string(g) + " is not a dict");
    auto params = gv.dict().find("params");
    if (params == gv.dict().end() || !params->second.is_list())
      fail("param group " + std::to_string(g) + " has no 'params' list");
    const List& names = params->second.list();
    std::map<std::string, int64_t> mine;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i].kind() != Value::Kind::kString)
        fail("param group " + std::to_string(g) + " lists a " + describe(names[i]) +
             ", not a parameter name");
      if (!index.count(names[i].to_string()))
        mine[names[i].to_string()] = start + static_cast<int64_t>(i);
    }
    index.insert(mine.begin(), mine.end());
    List ids;
    for (const Value& n : names) ids.emplace_back(index.at(n.to_string()));
    Dict gd = gv.dict();
    for (const PythonOption& o : kind.options)
      if (!gd.count(o.key)) gd.emplace(o.key, o.none ? Value() : Value(false));
    gd["params"] = std::move(ids);
    groups.emplace_back(std::move(gd));
    start += static_cast<int64_t>(names.size());
  }

  // State: an entry for each parameter that has state, by index.
  Dict state;
  Dict* old = state_v.is_dict() ? &state_v.dict() : nullptr;
  for (const Value& nv : with_v.list()) {
    if (nv.kind() != Value::Kind::kString)
      fail("'params_with_state' lists a " + describe(nv) + ", not a parameter name");
    const std::string& name = nv.to_string();
    auto id = index.find(name);
    if (id == index.end()) fail("parameter '" + name + "' has state but is in no param group");
    Dict entry;
    if (old) {
      auto it = old->find(name);
      if (it != old->end()) {
        if (!it->second.is_dict()) fail("the state of '" + name + "' is not a dict");
        entry = std::move(it->second.dict());
      }
    }
    if (kind.step == PyStep::kNone) {
      if (!entry.count("momentum_buffer")) entry.emplace("momentum_buffer", Value());
    } else {
      auto st = entry.find("step");
      if (st == entry.end() || st->second.kind() != Value::Kind::kInt)
        fail("the state of '" + name + "' has no int 'step'");
      if (kind.step == PyStep::kTensor) {
        OutTensor t;
        t.made = at::scalar_tensor(static_cast<double>(st->second.to_int()), at::kFloat);
        t.in_dtype = t.out_dtype = at::kFloat;
        t.name = where + ".state." + std::to_string(id->second) + ".step";
        tree.tensors.push_back(std::move(t));
        st->second = tree.placeholder(tree.tensors.size() - 1);
      }
    }
    state.emplace(std::to_string(id->second), std::move(entry));
  }
  d.clear();
  auto [it, _] = d.emplace("state", std::move(state));
  d.emplace("param_groups", std::move(groups));
  tree.int_keys.insert(&it->second.dict());
}

template <typename Fn>
void each_dict(Dict& d, const std::string& path, const Fn& fn) {
  if (fn(d, path)) return;
  for (auto& [k, v] : d) {
    const std::string p = path.empty() ? k : path + "." + k;
    if (v.is_dict()) each_dict(v.dict(), p, fn);
    if (v.is_list())
      for (size_t i = 0; i < v.list().size(); ++i)
        if (v.list()[i].is_dict()) each_dict(v.list()[i].dict(), p + "." + std::to_string(i), fn);
  }
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 19 && s.find_first_not_of("0123456789") == std::string::npos &&
         (s == "0" || s[0] != '0');
}

}  // namespace

std::vector<std::string> optimizers_to_pytorch(Tree& tree) {
  std::vector<std::string> done;
  each_dict(tree.root, "", [&](Dict& d, const std::string& path) {
    const Kind* k = dcp_optimizer(d);
    if (!k) return false;
    rewrite(tree, d, *k, path.empty() ? "(root)" : path);
    done.push_back(path);
    return true;
  });
  return done;
}

void mark_python_optimizer_state(Tree& tree) {
  each_dict(tree.root, "", [&](Dict& d, const std::string&) {
    auto state = d.find("state");
    auto groups = d.find("param_groups");
    if (state == d.end() || groups == d.end() || !state->second.is_dict() ||
        !groups->second.is_list() || d.count("kind"))
      return false;
    for (const Value& g : groups->second.list()) {
      if (!g.is_dict()) return false;
      auto params = g.dict().find("params");
      if (params == g.dict().end() || !params->second.is_list()) return false;
      for (const Value& p : params->second.list())
        if (p.kind() != Value::Kind::kInt) return false;
    }
    for (const auto& kv : state->second.dict())
      if (!is_index(kv.first)) return false;
    tree.int_keys.insert(&state->second.dict());
    return true;
  });
}

}  // namespace convert
}  // namespace internal
}  // namespace dcp
