// Writing what PyTorch reads (FileSystemWriterOptions::format = kPyTorchDcp),
// against the real thing: C++ saves at 1 rank and at 2 ranks (real processes
// over Gloo) with sharded tensors (rows, 2x2 blocks), replicated tensors
// (dedup), every dtype Python 1.13 has, 0-d and zero-element tensors and
// plain values of every kind; then Debian's python3-torch 1.13 loads the
// 1.13 flavour with its own DCP load_state_dict (1 rank, and 2 ranks over
// Gloo into other shardings), and the 2.x flavour is unpickled over
// stand-ins of the 2.x classes (tests/interop/py/check_written_dcp.py);
// every item is checked as a zip and torch.load'ed. dcp++ reads both
// flavours back exactly, with its checksums from the sidecar.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/layouts.h"
#include "common/multiproc.h"
#include "common/python_fixtures.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

using testing::Box;
using testing::TempDir;

// The dtypes Python 1.13 stores (all of dcp++'s but complex32).
std::vector<at::ScalarType> pytorch_dtypes() {
  std::vector<at::ScalarType> out;
  for (at::ScalarType t : testing::all_dtypes())
    if (t != at::kComplexHalf) out.push_back(t);
  return out;
}

// The state every test saves, whole: nested dicts, a list holding tensors,
// plain values of every kind.
StateDict full_state() {
  StateDict sd;
  Dict model;
  int64_t seed = 1;
  for (at::ScalarType t : pytorch_dtypes())
    model[std::string("t_") + dtype_name(t)] = testing::make_tensor(t, {3, 5}, seed++);
  model["scalar"] = testing::make_tensor(at::kFloat, {}, 40);
  model["empty"] = testing::make_tensor(at::kLong, {0, 4}, 41);
  model["requires_grad"] = testing::make_tensor(at::kFloat, {2, 2}, 42).requires_grad_(true);
  sd["model"] = model;
  sd["rows"] = testing::make_tensor(at::kFloat, {6, 4}, 43);     // saved row-split
  sd["blocks"] = testing::make_tensor(at::kDouble, {4, 6}, 44);  // saved as 2x2 blocks
  sd["replicated"] = testing::make_tensor(at::kBFloat16, {5}, 45);
  sd["layers"] =
      List{testing::make_tensor(at::kFloat, {2}, 46), testing::make_tensor(at::kInt, {3}, 47)};
  sd["values"] = Dict{{"int", 7},
                      {"neg", -300},
                      {"big", int64_t{1} << 40},
                      {"min", std::numeric_limits<int64_t>::min()},
                      {"float", 0.1},
                      {"negzero", -0.0},
                      {"str", "h\xc3\xa9llo"},
                      {"true", true},
                      {"false", false},
                      {"none", nullptr},
                      {"bytes", Bytes{std::string("\x00\xff\x80 bin", 7)}},
                      {"list", List{1, 2.5, "x", List{}, Dict{{"k", Bytes{"b"}}}, nullptr}},
                      {"empty_dict", Dict{}}};
  sd["step"] = 42;
  return sd;
}

// The boxes each rank saves of "rows" and "blocks" (world 1: all of them).
std::vector<Box> row_boxes(int rank, int world) {
  std::vector<Box> all = {{{0, 0}, {3, 4}}, {{3, 0}, {3, 4}}};
  if (world == 1) return all;
  return {all[rank]};
}
std::vector<Box> block_boxes(int rank, int world) {
  std::vector<Box> all = {{{0, 0}, {2, 3}}, {{2, 3}, {2, 3}}, {{0, 3}, {2, 3}}, {{2, 0}, {2, 3}}};
  if (world == 1) return all;
  return rank == 0 ? std::vector<Box>{all[0], all[1]} : std::vector<Box>{all[2], all[3]};
}

// What rank `rank` of `world` saves: the full state, "rows" and "blocks" sharded.
StateDict saved_state(int rank, int world) {
  StateDict sd = full_state();
  sd["rows"] = testing::sharded(sd["rows"].tensor(), row_boxes(rank, world), false);
  sd["blocks"] = testing::sharded(sd["blocks"].tensor(), block_boxes(rank, world), false);
  return sd;
}

SaveOptions pytorch_options(const std::string& path, const std::string& version, bool per_thread) {
  FileSystemWriterOptions wo;
  wo.format = StorageFormat::kPyTorchDcp;
  wo.pytorch_version = version;
  wo.file_per_thread = per_thread;
  wo.sync_files = false;
  SaveOptions so;
  so.checkpoint_id = path;
  so.storage_writer = make_filesystem_writer(path, wo);
  return so;
}

nlohmann::json to_json(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      return nullptr;
    case Value::Kind::kBool:
      return v.to_bool();
    case Value::Kind::kInt:
      return v.to_int();
    case Value::Kind::kDouble:
      return v.to_double();
    case Value::Kind::kString:
      return v.to_string();
    case Value::Kind::kBytes: {
      static const char* d = "0123456789abcdef";
      std::string h;
      for (unsigned char c : v.to_bytes().data) h += {d[c >> 4], d[c & 15]};
      return nlohmann::json{{"__bytes__", h}};
    }
    case Value::Kind::kList: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& x : v.list()) a.push_back(to_json(x));
      return a;
    }
    case Value::Kind::kDict: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& [k, x] : v.dict()) o[k] = to_json(x);
      return o;
    }
    default:
      throw std::runtime_error("to_json: " + describe(v));
  }
}

// The manifest check_written_dcp.py reads: every flat key of `full` with its
// path, tensors as .bin files.
void write_expected(const std::string& dir, const StateDict& full, const std::string& flavour) {
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto [flat, mapping] = flatten_state_dict(full);
  nlohmann::json keys = nlohmann::json::array();
  int n = 0;
  for (const auto& [key, v] : flat) {
    nlohmann::json e;
    e["key"] = key;
    nlohmann::json path = nlohmann::json::array();
    auto it = mapping.find(key);
    if (it == mapping.end()) {
      path.push_back(key);
    } else {
      for (const PathElement& p : it->second) {
        if (p.is_index)
          path.push_back(p.index);
        else
          path.push_back(p.key);
      }
    }
    e["path"] = path;
    if (v.is_tensor()) {
      const at::Tensor t = v.tensor().detach().contiguous();
      const std::string file = std::to_string(n++) + ".bin";
      testing::write_file(dir + "/" + file,
                          std::string(static_cast<const char*>(t.data_ptr()), t.nbytes()));
      e["kind"] = "tensor";
      e["dtype"] = dtype_name(t.scalar_type());
      e["shape"] = t.sizes().vec();
      e["file"] = file;
      e["requires_grad"] = v.tensor().requires_grad();
      // Loaded by 2 Python ranks into other shardings: rows by columns, blocks by rows.
      e["reshard_dim"] = key == "rows"                                 ? nlohmann::json(1)
                         : key == "blocks" || key == "model.t_float32" ? nlohmann::json(0)
                                                                       : nlohmann::json(nullptr);
    } else {
      e["kind"] = "value";
      e["value"] = to_json(v);
    }
    keys.push_back(e);
  }
  nlohmann::json doc{{"flavour", flavour}, {"keys", keys}};
  testing::write_file(dir + "/manifest.json", doc.dump(1));
}

// Runs check_written_dcp.py; "" when it says OK.
std::string python_check(const std::vector<std::string>& args) {
  const testing::PythonRun r = testing::run_python_script("check_written_dcp.py", args);
  if (r.ok() && r.out.find("OK") != std::string::npos) return "";
  return "check_written_dcp.py " + args.at(0) + " exited with " + std::to_string(r.exit_code) +
         ":\n" + r.err + r.out;
}

// "" when the nested `got` (load_all's) holds every leaf of `want`, exactly.
std::string compare_state(const StateDict& got, const StateDict& want) {
  auto [gflat, gmap] = flatten_state_dict(got);
  auto [wflat, wmap] = flatten_state_dict(want);
  std::string out;
  for (const auto& [key, w] : wflat) {
    auto g = gflat.find(key);
    if (g == gflat.end()) {
      out += "missing '" + key + "'; ";
      continue;
    }
    if (w.is_tensor()) {
      const std::string m = testing::compare_loaded(g->second, w.tensor().detach());
      if (!m.empty()) out += "'" + key + "': " + m + "; ";
    } else if (!g->second.equals(w)) {
      out += "'" + key + "': " + describe(g->second) + " != " + describe(w) + "; ";
    }
  }
  if (gflat.size() != wflat.size())
    out += std::to_string(gflat.size()) + " keys, expected " + std::to_string(wflat.size());
  if (!(gmap == wmap)) out += "another nesting (flatten mapping)";
  return out;
}

// `v` with other contents: tensors of other bytes, plain values None.
Value scrambled(const Value& v) {
  if (v.is_tensor()) return testing::scrambled_like(v.tensor().detach());
  if (v.is_dict() && !v.dict().empty()) {
    Dict d;
    for (const auto& [k, x] : v.dict()) d[k] = scrambled(x);
    return d;
  }
  if (v.is_list() && !v.list().empty() && v.list()[0].is_tensor()) {
    List l;
    for (const auto& x : v.list()) l.push_back(scrambled(x));
    return l;
  }
  return Value();
}
StateDict scrambled(const StateDict& sd) {
  StateDict out;
  for (const auto& [k, v] : sd) out[k] = scrambled(v);
  return out;
}

// dcp::load_all of `path`: every leaf of the full state, nested as saved;
// then an in-place load into whole tensors.
void expect_reads_back(const std::string& path) {
  const StateDict loaded = load_all(path);
  EXPECT_EQ(compare_state(loaded, full_state()), "") << path;
  StateDict dst = scrambled(full_state());
  load(dst, path);
  EXPECT_EQ(compare_state(dst, full_state()), "") << path;
}

// The root code and the text of the CheckpointError `fn` throws.
template <typename Fn>
std::pair<ErrorCode, std::string> failure(Fn fn) {
  try {
    fn();
  } catch (const CheckpointError& e) {
    return {e.root_code(), e.what()};
  }
  ADD_FAILURE() << "no CheckpointError";
  return {ErrorCode::kInternal, ""};
}

struct Layout {
  const char* version;
  bool per_thread;
};
const Layout kLayouts[] = {{"1.13", true}, {"1.13", false}, {"2", true}, {"2", false}};

std::string layout_name(const Layout& l) {
  return std::string("pytorch ") + l.version + (l.per_thread ? ", file per thread" : ", per item");
}

TEST(PyTorchWrite, OneRankLoadsInPython) {
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(layout_name(l));
    TempDir d;
    const std::string ck = d.sub("ck");
    save(saved_state(0, 1), pytorch_options(ck, l.version, l.per_thread));
    EXPECT_EQ(checkpoint_format(ck), "PyTorch DCP");
    write_expected(d.sub("expected"), full_state(), l.version);
    if (std::string(l.version) == "1.13")
      EXPECT_EQ(python_check({"load113", ck, d.sub("expected")}), "");
    else
      EXPECT_EQ(python_check({"check2x", ck, d.sub("expected")}), "");
    expect_reads_back(ck);
  }
}

DCP_REGISTER_WORKER(pytorch_write) {
  SaveOptions so = pytorch_options(args.at(0), args.at(1), args.at(2) == "1");
  so.collectives = ctx.collectives(std::chrono::seconds(20));
  so.metadata_on_every_rank = true;  // each rank checks it below
  const Metadata md = save(saved_state(ctx.rank(), ctx.world_size()), so);
  // Dedup: one copy of each replicated item, whichever rank wrote it.
  std::map<std::string, int> per_key;
  for (const auto& [index, info] : md.storage_data) ++per_key[index.fqn];
  EXPECT_EQ(per_key["replicated"], 1);
  EXPECT_EQ(per_key["rows"], 2);
  EXPECT_EQ(per_key["blocks"], 4);
  return 0;
}

TEST(PyTorchWrite, TwoRanksLoadInPythonAtOneAndTwoRanks) {
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(layout_name(l));
    TempDir d;
    const std::string ck = d.sub("ck");
    testing::RunOptions o;
    o.args = {ck, l.version, l.per_thread ? "1" : "0"};
    auto run = testing::run_ranks(2, "pytorch_write", o);
    ASSERT_TRUE(run.ok()) << run.summary();
    // Both ranks wrote data files.
    bool rank1 = false;
    for (const std::string& f : testing::data_files(ck))
      rank1 |= f.find("/__1_") != std::string::npos;
    EXPECT_TRUE(rank1);
    write_expected(d.sub("expected"), full_state(), l.version);
    if (std::string(l.version) == "1.13") {
      EXPECT_EQ(python_check({"load113", ck, d.sub("expected")}), "");
      EXPECT_EQ(python_check({"load113_2rank", ck, d.sub("expected")}), "");
    } else {
      EXPECT_EQ(python_check({"check2x", ck, d.sub("expected")}), "");
    }
    expect_reads_back(ck);
    EXPECT_EQ(read_metadata(ck).world_size, 2);
  }
}

// The raw bytes a custom save planner gives for a BYTE_IO item (not dcp++'s
// plain-value encoding) come back to the load planner as they were.
class RawBytesPlanner : public DefaultSavePlanner {
 public:
  WriteData resolve_data(const WriteItem& item) override {
    if (item.index.fqn == "raw") return Bytes{std::string("\x01\x02not-encoded", 13)};
    return DefaultSavePlanner::resolve_data(item);
  }
};
class RawBytesLoader : public DefaultLoadPlanner {
 public:
  std::string got;
  void load_bytes(const ReadItem& item, const Bytes& value) override {
    if (item.dest_index.fqn == "raw") {
      got = value.data;
      return;
    }
    DefaultLoadPlanner::load_bytes(item, value);
  }
};

TEST(PyTorchWrite, RawPlannerBytesRoundTrip) {
  TempDir d;
  const std::string ck = d.sub("ck");
  SaveOptions so = pytorch_options(ck, "2", true);
  so.planner = std::make_shared<RawBytesPlanner>();
  save(StateDict{{"raw", 0}, {"w", at::ones({2})}}, so);
  auto loader = std::make_shared<RawBytesLoader>();
  LoadOptions lo;
  lo.checkpoint_id = ck;
  lo.planner = loader;
  StateDict dst{{"raw", 0}, {"w", at::zeros({2})}};
  load(dst, lo);
  EXPECT_EQ(loader->got, std::string("\x01\x02not-encoded", 13));
  EXPECT_TRUE(dst.at("w").tensor().equal(at::ones({2})));
}

// --- checksums: the sidecar ---------------------------------------------------

// The file and offset of the first element of item `fqn`'s data/0 record.
std::pair<std::string, uint64_t> tensor_data_at(const std::string& ck, const std::string& fqn) {
  const Metadata md = read_metadata(ck);
  for (const auto& [index, info] : md.storage_data)
    if (index.fqn == fqn) {
      const std::string bytes = testing::read_file(ck + "/" + info.relative_path);
      // The local header of data/0 (30 bytes, the name, the extra field), then the data.
      const size_t header = bytes.find("archive/data/0", info.offset) - 30;
      auto u16 = [&](size_t at) {
        return static_cast<unsigned char>(bytes[at]) |
               static_cast<unsigned>(static_cast<unsigned char>(bytes[at + 1])) << 8;
      };
      return {ck + "/" + info.relative_path, header + 30 + u16(header + 26) + u16(header + 28)};
    }
  throw std::runtime_error("no item " + fqn);
}

void flip_byte(const std::string& file, uint64_t at) {
  std::string b = testing::read_file(file);
  b[at] = static_cast<char>(b[at] ^ 0x10);
  testing::write_file(file, b);
}

TEST(PyTorchWrite, AFlippedByteIsACorruptionErrorNamingFileAndKey) {
  for (const char* version : {"1.13", "2"}) {
    TempDir d;
    const std::string ck = d.sub("ck");
    StateDict sd{{"w", testing::make_tensor(at::kFloat, {64, 64}, 1)}, {"v", 3}};
    save(sd, pytorch_options(ck, version, true));
    EXPECT_NE(read_metadata(ck).library_version.find("checksums in .metadata.dcp"),
              std::string::npos)
        << read_metadata(ck).library_version;
    const auto [file, at] = tensor_data_at(ck, "w");
    flip_byte(file, at + 100);
    StateDict dst{{"w", at::zeros({64, 64})}, {"v", 0}};
    const auto [code, m] = failure([&] { load(dst, ck); });
    EXPECT_EQ(code, ErrorCode::kCorruption) << m;
    EXPECT_NE(m.find("'w'"), std::string::npos) << m;
    EXPECT_NE(m.find(file), std::string::npos) << m;
    EXPECT_NE(m.find("XXH3-64 checksum mismatch"), std::string::npos) << m;
    EXPECT_NE(m.find(".metadata.dcp"), std::string::npos) << m;
    // A resharded read checks the whole record.
    StateDict half{{"w", testing::sharded(sd.at("w").tensor(), {{{0, 0}, {32, 64}}}, true)}};
    LoadOptions lo;
    lo.checkpoint_id = ck;
    lo.strict = false;
    EXPECT_EQ(failure([&] { load(half, lo); }).first, ErrorCode::kCorruption);
    // Without verification the bytes load as they are.
    FileSystemReaderOptions ro;
    ro.verify_checksums = false;
    lo.storage_reader = make_filesystem_reader(ck, ro);
    StateDict again{{"w", at::zeros({64, 64})}};
    EXPECT_NO_THROW(load(again, lo));
  }
}

TEST(PyTorchWrite, ASidecarOfAnotherSaveIsIgnored) {
  TempDir d;
  const std::string ck = d.sub("ck");
  const StateDict full = full_state();
  save(saved_state(0, 1), pytorch_options(ck, "1.13", true));
  // Python rewrites .metadata (as its FileSystemWriter would pickle it).
  EXPECT_EQ(python_check({"repickle", ck, "1.13"}), "");
  const Metadata md = read_metadata(ck);
  EXPECT_EQ(md.library_version, "PyTorch DCP (1.13)");
  // The checkpoint reads as 1.13 wrote it: flat dotted keys, CRC-32s checked.
  const StateDict loaded = load_all(ck);
  EXPECT_TRUE(loaded.count("model.t_float32"));
  EXPECT_TRUE(loaded.at("values.str").equals(Value("h\xc3\xa9llo")));
  StateDict dst = scrambled(full);
  load(dst, ck);
  EXPECT_EQ(compare_state(dst, full), "");
}

TEST(PyTorchWrite, ADamagedSidecarIsACorruptionError) {
  TempDir d;
  const std::string ck = d.sub("ck");
  save(StateDict{{"w", at::ones({3})}}, pytorch_options(ck, "2", true));
  flip_byte(ck + "/.metadata.dcp", 40);
  EXPECT_THROW(read_metadata(ck), CorruptionError);
}

// --- what the format refuses, before anything is written ---------------------

TEST(PyTorchWrite, DtypesPythonCannotStoreAreRefusedByNameAtPlanTime) {
  TempDir d;
  const std::string ck = d.sub("ck");
  StateDict sd{{"ok", at::ones({2})}, {"model", Dict{{"c32", at::ones({2}, at::kComplexHalf)}}}};
  const auto [code, m] = failure([&] { save(sd, pytorch_options(ck, "1.13", true)); });
  EXPECT_EQ(code, ErrorCode::kInvalidArgument) << m;
  EXPECT_NE(m.find("'model.c32'"), std::string::npos) << m;
  EXPECT_NE(m.find("complex32"), std::string::npos) << m;
  EXPECT_NE(m.find("plan"), std::string::npos) << m;
  EXPECT_TRUE(testing::data_files(ck).empty());
  EXPECT_FALSE(is_committed_checkpoint(ck));
  // A committed checkpoint in the directory stays as it was.
  save(StateDict{{"ok", at::ones({2})}}, pytorch_options(ck, "2", true));
  EXPECT_EQ(failure([&] { save(sd, pytorch_options(ck, "2", true)); }).first,
            ErrorCode::kAlreadyExists);
  EXPECT_TRUE(load_all(ck).at("ok").tensor().equal(at::ones({2})));
  // dcp++'s own format stores it.
  TempDir n;
  EXPECT_NO_THROW(save(sd, n.sub("ck")));
}

TEST(PyTorchWrite, TextThatIsNotUtf8IsRefused) {
  TempDir d;
  const auto [code, m] = failure([&] {
    save(StateDict{{"bad\xff", 1}}, pytorch_options(d.sub("a"), "2", true));
  });
  EXPECT_EQ(code, ErrorCode::kInvalidArgument) << m;
  EXPECT_NE(m.find("UTF-8"), std::string::npos) << m;
  const auto [code2, m2] = failure([&] {
    save(StateDict{{"s", std::string("\xc3")}}, pytorch_options(d.sub("b"), "2", true));
  });
  EXPECT_EQ(code2, ErrorCode::kInvalidArgument) << m2;
  EXPECT_NE(m2.find("'s'"), std::string::npos) << m2;
  EXPECT_FALSE(is_committed_checkpoint(d.sub("b")));
  EXPECT_TRUE(testing::data_files(d.sub("b")).empty());
}

TEST(PyTorchWrite, BadOptionsAreRefused) {
  FileSystemWriterOptions wo;
  wo.format = StorageFormat::kPyTorchDcp;
  wo.pytorch_version = "2.4";
  EXPECT_THROW(make_filesystem_writer("/tmp/x", wo), InvalidArgumentError);
  EXPECT_EQ(std::string(storage_format_name(StorageFormat::kPyTorchDcp)), "pytorch-dcp");
  EXPECT_EQ(storage_format_from_name("dcp++"), StorageFormat::kDcp);
  EXPECT_THROW(storage_format_from_name("pytorch"), InvalidArgumentError);
}

// The memory store takes the format too (any Env does).
TEST(PyTorchWrite, InTheMemoryStore) {
  const std::string ck = "memory://pytorch_write/ck";
  save(saved_state(0, 1), pytorch_options(ck, "2", true));
  EXPECT_EQ(checkpoint_format(ck), "PyTorch DCP");
  EXPECT_EQ(compare_state(load_all(ck), full_state()), "");
}

// Overwriting: the old sidecar and data files go before anything is written.
TEST(PyTorchWrite, OverwriteReplacesEverything) {
  TempDir d;
  const std::string ck = d.sub("ck");
  save(saved_state(0, 1), pytorch_options(ck, "1.13", false));
  SaveOptions so = pytorch_options(ck, "2", true);
  FileSystemWriterOptions wo;
  wo.format = StorageFormat::kPyTorchDcp;
  wo.overwrite = true;
  wo.sync_files = false;
  so.storage_writer = make_filesystem_writer(ck, wo);
  save(StateDict{{"w", at::ones({4})}}, so);
  const StateDict loaded = load_all(ck);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_TRUE(loaded.at("w").tensor().equal(at::ones({4})));
  EXPECT_EQ(testing::data_files(ck).size(), 1u);
  // Back to dcp++'s format: no sidecar stays behind.
  FileSystemWriterOptions native;
  native.overwrite = true;
  so.storage_writer = make_filesystem_writer(ck, native);
  save(StateDict{{"w", at::ones({4})}}, so);
  EXPECT_FALSE(std::ifstream(ck + "/.metadata.dcp").good());
  EXPECT_EQ(checkpoint_format(ck), "dcp++");
}

}  // namespace
}  // namespace dcp
