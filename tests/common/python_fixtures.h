// Checkpoints written by PyTorch itself, made at test time: the helper runs
// tests/interop/py/make_fixtures.py with /usr/bin/python3 (Debian's
// python3-torch 1.13; $DCP_PYTHON overrides the interpreter) and loads the
// manifest it writes beside the checkpoint (expected/manifest.json, whose
// format the top of make_fixtures.py documents): every leaf a reader must
// find, under dcp++'s flat key, with the tensors' expected contents.
//
//   TempDir dir;
//   std::string ckpt = make_python_fixture("dcp113_1rank_per_rank", dir.sub("fx"));
//   FixtureManifest m = load_fixture_manifest(dir.sub("fx"));
//   for (const ExpectedLeaf& leaf : m.main().leaves) ...
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dcp {
namespace testing {

// Runs `make_fixtures.py <kind> <out_dir>` (out_dir must be absent or
// empty) and returns the absolute path of the fixture's first checkpoint (a
// directory for PyTorch DCP, a file for torch.save). Throws
// std::runtime_error with the script's stderr when it fails.
std::string make_python_fixture(const std::string& kind, const std::string& out_dir);

// The out_dir of a fixture of `kind` made once and shared by every test
// process of the build (in $DCP_FIXTURE_CACHE, else <build>/tests/
// python-fixtures), under a name that changes with the scripts' contents;
// made by the first process that asks (concurrent makers: the first to
// finish wins). Read it, do not change it: copy it first.
std::string shared_python_fixture(const std::string& kind);

// The kinds make_fixtures.py knows (`make_fixtures.py --list`).
std::vector<std::string> python_fixture_kinds();

struct ExpectedLeaf {
  std::string key;       // dcp++'s flat key ("nested.b.c")
  nlohmann::json path;   // its path: dict keys (str) and list indices (int)
  std::string kind;      // tensor, int, float, str, bool, none, bytes, list, dict, unsupported
  std::string py_type;   // "torch.Tensor", "int", "tuple", "collections.OrderedDict", ...
  at::Tensor tensor;     // kind "tensor": the whole tensor (the manifest's dtype and shape)
  nlohmann::json value;  // plain kinds: the JSON value (kind "bytes": the hex string)
  std::string bytes;     // kind "bytes": the bytes themselves
  std::string why;       // kind "unsupported": what makes it unrepresentable
  nlohmann::json entry;  // the whole manifest entry ("chunks", "stored", ...)
};

struct ExpectedCheckpoint {
  std::string name;     // "main"; "model" beside an optimizer's state
  std::string path;     // absolute
  std::string format;   // "pytorch_dcp", "torch_save", "torch_save_legacy"
  std::string flavour;  // pytorch_dcp: "1.13" or "2.x"
  std::string layout;   // pytorch_dcp: "per_item" or "per_rank"
  int world_size = 1;
  bool must_refuse = false;                 // a reader must fail with a clear error
  std::vector<std::string> metadata_files;  // pytorch_dcp: ".metadata" or "__<r>.metadata"
  std::vector<std::string> param_names;     // optimizer state: parameter i's name
  std::vector<std::string> notes;
  std::vector<ExpectedLeaf> leaves;

  // The leaf of `key`; find() returns nullptr and leaf() throws when absent.
  const ExpectedLeaf* find(const std::string& key) const;
  const ExpectedLeaf& leaf(const std::string& key) const;
};

struct FixtureManifest {
  std::string kind;
  std::string out_dir;
  std::vector<ExpectedCheckpoint> checkpoints;  // never empty
  nlohmann::json json;                          // the whole document

  const ExpectedCheckpoint& main() const { return checkpoints.front(); }
  const ExpectedCheckpoint& checkpoint(const std::string& name) const;
};

// Loads out_dir/expected/manifest.json and the tensors it names. Throws
// std::runtime_error on anything malformed (a .bin whose size is not the
// tensor's, an unknown dtype or kind, a missing field).
FixtureManifest load_fixture_manifest(const std::string& out_dir);

// The dtype of a manifest dtype name ("float32", "bfloat16", "bool", ...).
at::ScalarType fixture_dtype(const std::string& name);

// Runs tests/interop/py/<script> args... under the same interpreter
// (/usr/bin/python3 or $DCP_PYTHON), stdout and stderr captured.
struct PythonRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string out, err;
  bool ok() const { return exit_code == 0; }
};
PythonRun run_python_script(const std::string& script, const std::vector<std::string>& args);

}  // namespace testing
}  // namespace dcp
