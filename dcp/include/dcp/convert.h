// Converting a checkpoint from any format dcp++ reads (its own, PyTorch DCP,
// torch.save, safetensors: docs/INTEROP.md) into one PyTorch's ecosystem
// reads, or into dcp++'s own. What `ckpt convert` runs.
//
//   dcp::ConvertOptions o;
//   o.to = dcp::ConvertFormat::kSafetensors;
//   o.only = {"model"};
//   o.dtype = at::kBFloat16;
//   dcp::convert("/ckpt/step_0000001000", "/publish/model", o);
//
// The conversion streams: each output tensor is read (in slices of at most
// `buffer_bytes` along its first dimensions) into one of two reused buffers
// through dcp++'s load path (sharded tensors are consolidated there, every
// read verified as the source format allows), while the other buffer is
// written out. Memory is about 2 x buffer_bytes (twice that with a dtype
// conversion) plus the plain values, whatever the checkpoint's size.
//
// Nothing half-written is ever left under `dst`'s name: the output is made
// under a temporary name beside it (`dst`.tmp-<random>), made durable
// (with `sync`), and renamed to `dst` at the end; on failure the temporary
// is removed. An existing `dst` is refused unless `overwrite` is set (then
// it is replaced only once the new output is complete).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dcp/export.h"

namespace dcp {

class Env;

enum class ConvertFormat {
  kDcp,         // "dcp++": a dcp++ checkpoint directory
  kPyTorchDcp,  // "pytorch-dcp": a directory Python's DCP loads (docs/INTEROP.md)
  kTorchSave,   // "torch": one file torch.load(f, weights_only=True) opens
  kSafetensors  // "safetensors": a Hugging Face directory of safetensors files
};

// "dcp++", "pytorch-dcp", "torch", "safetensors".
DCP_CORE_EXPORT const char* convert_format_name(ConvertFormat format);
// The inverse; InvalidArgumentError naming the known names otherwise.
DCP_CORE_EXPORT ConvertFormat convert_format_from_name(std::string_view name);

// How an optimizer's state in dcp++'s own layout (dcp::libtorch::
// OptimizerState's default, docs/INTEGRATIONS.md) comes out.
enum class ConvertOptimizerLayout {
  kAsSaved,  // as it is in the source
  // Python's optimizer.state_dict() (PyTorch 1.13): "state" by parameter
  // index (int keys in a torch file), "param_groups" with "params" index
  // lists and the group options Python keeps, the step as Python keeps it;
  // parameters without state have no entry. What torch.optim's
  // load_state_dict() takes.
  kPyTorch,
};

struct DCP_CORE_EXPORT ConvertProgress {
  uint64_t bytes_done = 0;   // tensor bytes written so far
  uint64_t bytes_total = 0;  // tensor bytes to write
  double seconds = 0;        // since the conversion started
};

struct DCP_CORE_EXPORT ConvertOptions {
  ConvertFormat to = ConvertFormat::kDcp;
  // Keys to convert: a flat key ("model.fc1.weight") or a prefix of flat
  // keys at a dot ("model" or "model." covers "model.fc1.weight"). Empty:
  // everything.
  std::vector<std::string> only;
  // Tensors of a floating dtype (float16, bfloat16, float32, float64) are
  // converted to this one (a floating dtype); others are kept as they are.
  // The optimizer steps made by kPyTorch stay float32, as Python keeps them.
  std::optional<at::ScalarType> dtype;
  // kSafetensors: the largest a file may get (tensor bytes; a tensor larger
  // than this gets a file of its own). 0 (default): one model.safetensors.
  uint64_t max_shard_bytes = 0;
  ConvertOptimizerLayout optimizer_layout = ConvertOptimizerLayout::kAsSaved;
  // kPyTorchDcp: the PyTorch DCP flavour, "2" (default) or "1.13"
  // (FileSystemWriterOptions::pytorch_version).
  std::string pytorch_version = "2";
  // Reader threads, and writer threads for kDcp / kPyTorchDcp.
  int threads = 2;
  // fdatasync every file written and fsync the directories (default on).
  bool sync = true;
  // Replace an existing `dst` (default: refused with AlreadyExistsError).
  bool overwrite = false;
  // Check every item's checksum (or zip record's CRC-32) as it is read.
  bool verify_checksums = true;
  // Bytes of one read buffer (there are two). Default 64 MiB.
  size_t buffer_bytes = size_t{64} << 20;
  // Called now and then (at most every 0.1 s, and once at the end) from
  // the converting threads, one call at a time.
  std::function<void(const ConvertProgress&)> progress;
  // Where `src` and `dst` are; nullptr: the Env each path's scheme names.
  Env* env = nullptr;
};

struct DCP_CORE_EXPORT ConvertResult {
  size_t tensors = 0;    // tensors written
  size_t values = 0;     // plain values written
  uint64_t bytes = 0;    // tensor bytes written
  size_t converted = 0;  // tensors whose dtype was converted (ConvertOptions::dtype)
  // Keys left out, each with why: "key: why" (values a safetensors file
  // cannot hold; values of the source dcp++ cannot read).
  std::vector<std::string> skipped;
  std::vector<std::string> files;  // what was written under dst (paths relative to it)
  double seconds = 0;
};

// Converts the checkpoint at `src` into `dst`. Throws a dcp::Error naming
// what is wrong (NotFoundError: no checkpoint at src; AlreadyExistsError:
// dst exists; InvalidArgumentError: a dtype the target cannot store, bad
// options; CorruptionError: a damaged source); `dst` is then as it was.
DCP_CORE_EXPORT ConvertResult convert(const std::string& src, const std::string& dst,
                                      const ConvertOptions& options = {});

// "5GB" (10^9), "500MB", "2GiB" (2^30), "123" (bytes), as Hugging Face's
// max_shard_size. InvalidArgumentError for anything else.
DCP_CORE_EXPORT uint64_t parse_byte_size(std::string_view text);
// "bf16"/"bfloat16", "f16"/"fp16"/"float16"/"half", "f32"/"fp32"/"float32"/
// "float", "f64"/"fp64"/"float64"/"double". InvalidArgumentError otherwise.
DCP_CORE_EXPORT at::ScalarType parse_float_dtype(std::string_view name);

}  // namespace dcp
