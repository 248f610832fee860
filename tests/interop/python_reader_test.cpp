// dcpp (integrations/python), the Python reader of dcp++'s own format,
// against checkpoints this process saves: at 1 rank and at 2 ranks (real
// processes over Gloo), with every dtype Python 1.13 has, sharded tensors
// (row split, 2x2 blocks), replicated tensors, plain values of every kind,
// nested dicts and lists, 0-d and zero-element tensors. The checks run in
// /usr/bin/python3 with Debian's python3-torch 1.13
// (py/check_python_reader.py): dcpp.load(), 1.13's DCP load_state_dict
// through dcpp.StorageReader at 1 and 2 Python ranks, damage named by file
// and key, and the warning without xxhash.
//
// The tensors' contents follow a formula both sides compute (spec.json names
// each tensor's dtype, shape and seed); plain values go in spec.json as JSON.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <cstdlib>
#include <fstream>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/dist/process_group.h"

namespace {

using dcp::testing::TempDir;
using nlohmann::json;

constexpr const char kPython[] = "/usr/bin/python3";

const std::vector<std::pair<std::string, at::ScalarType>>& dtypes() {
  static const std::vector<std::pair<std::string, at::ScalarType>> v = {
      {"float32", at::kFloat},
      {"float64", at::kDouble},
      {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16},
      {"int8", at::kChar},
      {"int16", at::kShort},
      {"int32", at::kInt},
      {"int64", at::kLong},
      {"uint8", at::kByte},
      {"bool", at::kBool},
      {"complex64", at::kComplexFloat},
      {"complex128", at::kComplexDouble}};
  return v;
}

// Element i of a tensor with `seed`: (7i + seed) mod 101 - 50 (+50 for
// uint8; i mod 3 == 0 for bool; real and imaginary parts x and x + 1 for
// complex). check_python_reader.py's pattern() is the same formula.
at::Tensor pattern(at::ScalarType dt, std::vector<int64_t> sizes, int64_t seed) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  at::Tensor i = at::arange(n, at::kDouble);
  at::Tensor x = (i * 7 + seed).fmod(101) - 50;
  at::Tensor t;
  if (dt == at::kBool)
    t = i.fmod(3).eq(0);
  else if (dt == at::kByte)
    t = (x + 50).to(dt);
  else if (at::isComplexType(dt))
    t = at::complex(x, x + 1).to(dt);
  else
    t = x.to(dt);
  return t.reshape(sizes);
}

struct Spec {
  json tensors = json::object();  // flat key -> {dtype, shape, seed}
  json values = json::object();   // flat key -> JSON value (bytes: {"hex": ...})
  json nested = json::object();   // what dcpp.load must give: key paths
};

at::Tensor add_tensor(Spec& spec, const std::string& key, const std::string& dtype,
                      std::vector<int64_t> sizes, int64_t seed) {
  spec.tensors[key] = {{"dtype", dtype}, {"shape", sizes}, {"seed", seed}};
  for (const auto& [name, dt] : dtypes())
    if (name == dtype) return pattern(dt, sizes, seed);
  throw std::runtime_error("no dtype " + dtype);
}

// The state dict of `rank` of `world` (1 or 2), and the spec of the whole.
dcp::StateDict state(int rank, int world, Spec& spec) {
  dcp::StateDict sd;
  dcp::Dict model;
  int64_t seed = 0;
  for (const auto& [name, dt] : dtypes())  // replicated: every rank saves them
    model["t_" + name] = add_tensor(spec, "model.t_" + name, name, {3, 5}, seed++);
  model["scalar"] = add_tensor(spec, "model.scalar", "float64", {}, 11);
  model["empty"] = add_tensor(spec, "model.empty", "float32", {0, 4}, 0);
  sd["model"] = model;

  // rows: [6, 4] float32 split by rows; blocks: [4, 6] int64 in 2x2 blocks,
  // rank 0 holding (0,0) and (1,1), rank 1 (0,1) and (1,0).
  const at::Tensor rows = add_tensor(spec, "rows", "float32", {6, 4}, 3);
  const at::Tensor blocks = add_tensor(spec, "blocks", "int64", {4, 6}, 5);
  dcp::ShardedTensor r{{6, 4}, {}}, b{{4, 6}, {}};
  for (int part = 0; part < 2; ++part) {
    if (world == 2 && part != rank) continue;
    r.local_shards.push_back({rows.narrow(0, 3 * part, 3).clone(), {3 * part, 0}});
  }
  for (int bi = 0; bi < 2; ++bi)
    for (int bj = 0; bj < 2; ++bj) {
      const int owner = (bi + bj) % 2;
      if (world == 2 && owner != rank) continue;
      b.local_shards.push_back(
          {blocks.narrow(0, 2 * bi, 2).narrow(1, 3 * bj, 3).clone(), {2 * bi, 3 * bj}});
    }
  sd["rows"] = r;
  sd["blocks"] = b;

  dcp::Dict values;
  auto value = [&](const std::string& k, dcp::Value v, json j) {
    values[k] = std::move(v);
    spec.values["values." + k] = std::move(j);
  };
  value("none", nullptr, nullptr);
  value("yes", true, true);
  value("no", false, false);
  value("int", 7, 7);
  value("big", int64_t{1} << 62, int64_t{1} << 62);
  value("neg", -3, -3);
  value("real", 3.25, 3.25);
  value("tiny", 1e-300, 1e-300);
  value("text", std::string("h\xc3\xa9llo \xe2\x9c\x93"), "h\xc3\xa9llo \xe2\x9c\x93");
  value("raw", dcp::Bytes{std::string("\x00\xff\x10", 3)}, json{{"hex", "00ff10"}});
  value("list", dcp::List{1, "a", 2.5}, json::array({1, "a", 2.5}));
  value("dict", dcp::Dict{{"lr", 0.5}, {"steps", dcp::List{}}},
        json{{"lr", 0.5}, {"steps", json::array()}});
  value("empty_dict", dcp::Dict{}, json::object());
  sd["values"] = values;

  // A list of dicts with tensors: list indices in the path.
  dcp::List layers;
  for (int i = 0; i < 2; ++i)
    layers.push_back(dcp::Dict{
        {"w", add_tensor(spec, "layers." + std::to_string(i) + ".w", "float32", {2, 2}, 20 + i)}});
  sd["layers"] = layers;
  sd["step"] = 42;
  spec.values["step"] = 42;
  return sd;
}

void write_spec(const Spec& spec, const std::string& path, int world) {
  std::ofstream f(path);
  f << json{{"tensors", spec.tensors}, {"values", spec.values}, {"world_size", world}}.dump(1);
}

// Runs the Python checks on `ckpt`; the script's output goes to the log.
void check_in_python(const std::string& ckpt, const std::string& spec, const std::string& mode) {
  const std::string cmd = std::string(kPython) + " " + DCP_SOURCE_DIR +
                          "/tests/interop/py/check_python_reader.py '" + ckpt + "' '" + spec +
                          "' " + mode;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(PythonReaderTest, OneRank) {
  TempDir dir;
  Spec spec;
  const dcp::StateDict sd = state(0, 1, spec);
  dcp::save(sd, dir.sub("ck"));
  write_spec(spec, dir.sub("spec.json"), 1);
  check_in_python(dir.sub("ck"), dir.sub("spec.json"), "all");
}

DCP_REGISTER_WORKER(python_reader_save) {
  Spec spec;
  const dcp::StateDict sd = state(ctx.rank(), ctx.world_size(), spec);
  dcp::SaveOptions so;
  so.checkpoint_id = args.at(0);
  so.collectives = ctx.collectives();
  dcp::save(sd, so);
  if (ctx.rank() == 0) write_spec(spec, args.at(1), ctx.world_size());
  return 0;
}

TEST(PythonReaderTest, TwoRanks) {
  TempDir dir;
  dcp::testing::RunOptions o;
  o.args = {dir.sub("ck"), dir.sub("spec.json")};
  auto run = dcp::testing::run_ranks(2, "python_reader_save", o);
  ASSERT_TRUE(run.ok()) << run.summary();
  ASSERT_EQ(dcp::read_metadata(dir.sub("ck")).world_size, 2);
  check_in_python(dir.sub("ck"), dir.sub("spec.json"), "all");
  check_in_python(dir.sub("ck"), dir.sub("spec.json"), "dcp2ranks");
}

}  // namespace
