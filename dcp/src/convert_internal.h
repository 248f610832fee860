// The parts of dcp::convert (dcp/convert.h): the source read in slices
// (convert_stream.cpp), the pipeline that overlaps reading and writing, the
// buffered output file, and the optimizer layout (convert_optimizer.cpp).
// convert.cpp puts them together for each target format.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "dcp/convert.h"
#include "dcp/env.h"
#include "dcp/metadata.h"
#include "dcp/storage.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {
namespace convert {

// One tensor of the output: a source tensor (by its flat key) or one the
// conversion made (an optimizer step in Python's layout).
struct OutTensor {
  std::string key;                               // the source's flat key; "" when made
  const TensorStorageMetadata* saved = nullptr;  // its entry in the source's metadata
  at::Tensor made;                               // when made: its values (contiguous CPU)
  at::ScalarType in_dtype = at::kFloat;          // as read
  at::ScalarType out_dtype = at::kFloat;         // as written
  std::vector<int64_t> sizes;
  std::string name;  // for messages: the key, or the made tensor's path

  uint64_t numel() const;
  uint64_t in_bytes() const;
  uint64_t out_bytes() const;
};

// A box of a tensor whose elements are contiguous in C order: leading
// dimensions of size 1, one dimension with a range, the rest whole.
struct Box {
  std::vector<int64_t> offsets;
  std::vector<int64_t> sizes;
  uint64_t numel() const;
};

// The boxes a tensor of `sizes` is read in, in order, each at most `cap`
// bytes at `elem` bytes an element (one box for a 0-d or empty tensor).
std::vector<Box> windows_of(const std::vector<int64_t>& sizes, uint64_t elem, uint64_t cap);

// A box of a tensor to read into `dst` (contiguous, in_dtype, the box's shape).
struct ReadPiece {
  const OutTensor* tensor = nullptr;
  Box box;
  at::Tensor dst;
};

// The checkpoint being converted, read through make_filesystem_reader()
// (any format dcp++ reads) in sequential mode (sequential_reads.h).
class Source {
 public:
  Source(const std::string& path, const ConvertOptions& options);
  ~Source();
  const Metadata& metadata() const { return md_; }
  // Keys whose values the reader cannot give (key -> why).
  const std::map<std::string, std::string>& unreadable() const { return unreadable_; }
  // The plain values of `keys`.
  std::map<std::string, Value> read_values(const std::vector<std::string>& keys);
  // Fills every piece's dst from the saved chunks (resharding them);
  // made tensors are copied. Not thread-safe.
  void read(const std::vector<ReadPiece>& pieces);
  // Checks what sequential reads left unchecked (sequential_reads.h).
  void finish();

 private:
  std::string path_;
  std::shared_ptr<StorageReader> reader_;
  Metadata md_;
  std::map<std::string, std::string> unreadable_;
  bool sequential_ = false;
};

// Counts bytes written and reports progress (ConvertOptions::progress).
class Progress {
 public:
  Progress(std::function<void(const ConvertProgress&)> fn, uint64_t total);
  void set_total(uint64_t total) { total_ = total; }
  void add(uint64_t bytes);
  void done();
  uint64_t bytes() const;

 private:
  std::function<void(const ConvertProgress&)> fn_;
  uint64_t total_;
  struct State;
  std::shared_ptr<State> state_;
};

// Where a piece of a tensor's output bytes goes: `offset` bytes into the
// tensor's output (out_dtype, C order), `n` bytes at `data`.
using PieceSink = std::function<void(size_t tensor, uint64_t offset, const void* data, size_t n)>;

// Reads `order` (indices into `tensors`) window by window into two buffers
// of `cap` bytes on this thread, converting dtypes, while a writer thread
// hands each filled buffer's pieces, in order, to `sink`. Every tensor
// gets at least one call (with n == 0 when it is empty).
void stream(Source& source, const std::vector<OutTensor>& tensors, const std::vector<size_t>& order,
            uint64_t cap, const PieceSink& sink, Progress& progress);

// Writes one file through a buffer: small writes are gathered, large ones
// go straight out; with `sync`, write-back is started every 64 MiB and the
// file is fdatasync'ed by finish().
class FileSink {
 public:
  FileSink(Env& env, const std::string& path, bool sync);
  ~FileSink();
  void write(const void* data, size_t n);
  void finish();
  uint64_t size() const { return size_ + used_; }

 private:
  void flush();
  void put(const void* data, size_t n);
  std::unique_ptr<WritableFile> file_;
  bool sync_;
  std::unique_ptr<char[]> buf_;
  size_t used_ = 0;
  uint64_t size_ = 0;
  uint64_t since_hint_ = 0;
};

// The tree being written: the source's state dict nested as saved, its
// tensors meta-device placeholders (out_dtype, sizes) that name OutTensors.
struct Tree {
  Dict root;
  std::vector<OutTensor> tensors;
  std::unordered_map<const void*, size_t> tensor_of;  // placeholder's TensorImpl -> tensors
  // Dicts whose keys are parameter indices: pickled with int keys.
  std::set<const Dict*> int_keys;

  // A placeholder for tensors[i].
  Value placeholder(size_t i);
  // The OutTensor a leaf is the placeholder of, or nullptr.
  const OutTensor* tensor(const Value& leaf) const;
  size_t index(const Value& leaf) const;
};

// Rewrites each optimizer state in dcp++'s layout found in the tree into
// Python's (ConvertOptimizerLayout::kPyTorch); returns the paths rewritten.
std::vector<std::string> optimizers_to_pytorch(Tree& tree);
// Marks the "state" dicts of optimizer states in Python's layout (int keys).
void mark_python_optimizer_state(Tree& tree);

}  // namespace convert
}  // namespace internal
}  // namespace dcp
