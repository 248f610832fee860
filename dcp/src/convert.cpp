// dcp::convert (dcp/convert.h): the source's state dict as a tree of
// placeholders, the optimizer layout, then one writer per target format:
//   torch        one torch.save zip: data.pkl (the nested dict), byteorder,
//                then data/0..N in first-use order, streamed (zip_writer.h)
//   safetensors  Hugging Face's layout, one file or shards and an index
//   dcp++, pytorch-dcp
//                dcp::save through a planner that reads each item from the
//                source when the writer asks for it (large tensors saved as
//                pieces of at most buffer_bytes)
// Every target is written under a temporary name beside dst and renamed at
// the end, after the source's reads were all verified.
#include "dcp/convert.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>

#include "convert_internal.h"
#include "dcp/checkpoint.h"
#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/logging.h"
#include "dcp/thread_annotations.h"
#include "env.h"
#include "interop/pickle_writer.h"
#include "interop/safetensors_dtypes.h"
#include "interop/torch_save_writer.h"
#include "interop/zip_writer.h"

namespace dcp {

using namespace internal;
using namespace internal::convert;

// ---------------------------------------------------------------------------
// Names and parsing

const char* convert_format_name(ConvertFormat format) {
  switch (format) {
    case ConvertFormat::kDcp:
      return "dcp++";
    case ConvertFormat::kPyTorchDcp:
      return "pytorch-dcp";
    case ConvertFormat::kTorchSave:
      return "torch";
    case ConvertFormat::kSafetensors:
      return "safetensors";
  }
  return "?";
}

ConvertFormat convert_format_from_name(std::string_view name) {
  for (ConvertFormat f : {ConvertFormat::kDcp, ConvertFormat::kPyTorchDcp,
                          ConvertFormat::kTorchSave, ConvertFormat::kSafetensors})
    if (name == convert_format_name(f)) return f;
  throw InvalidArgumentError("unknown target format '" + std::string(name) +
                             "' (known: dcp++, pytorch-dcp, torch, safetensors)");
}

uint64_t parse_byte_size(std::string_view text) {
  std::string s(text);
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  std::string unit = s.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  static const std::pair<const char*, uint64_t> kUnits[] = {{"", 1},
                                                            {"B", 1},
                                                            {"KB", 1000},
                                                            {"MB", 1000 * 1000},
                                                            {"GB", 1000ull * 1000 * 1000},
                                                            {"TB", 1000ull * 1000 * 1000 * 1000},
                                                            {"KIB", 1ull << 10},
                                                            {"MIB", 1ull << 20},
                                                            {"GIB", 1ull << 30},
                                                            {"TIB", 1ull << 40}};
  if (i > 0 && i <= 15)
    for (const auto& [name, factor] : kUnits)
      if (unit == name) {
        const uint64_t n = std::stoull(s.substr(0, i));
        if (n > UINT64_MAX / factor) break;
        return n * factor;
      }
  throw InvalidArgumentError("'" + s +
                             "' is not a size: a number and an optional unit "
                             "(B, KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: of 1024)");
}

at::ScalarType parse_float_dtype(std::string_view name) {
  static const std::pair<const char*, at::ScalarType> kNames[] = {
      {"bf16", at::kBFloat16},  {"bfloat16", at::kBFloat16}, {"f16", at::kHalf},
      {"fp16", at::kHalf},      {"float16", at::kHalf},      {"half", at::kHalf},
      {"f32", at::kFloat},      {"fp32", at::kFloat},        {"float32", at::kFloat},
      {"float", at::kFloat},    {"f64", at::kDouble},        {"fp64", at::kDouble},
      {"float64", at::kDouble}, {"double", at::kDouble}};
  for (const auto& [n, t] : kNames)
    if (name == n) return t;
  throw InvalidArgumentError("'" + std::string(name) +
                             "' is not a floating dtype (bf16, float16, float32, float64)");
}

namespace {

std::string random_hex() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

std::string parent_of(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string base_of(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

bool exists(Env& env, const std::string& path) {
  return env.file_exists(path) || env.dir_exists(path);
}

// ---------------------------------------------------------------------------
// The tree

// The source's state dict, selected (`only`), as a tree of placeholders and
// plain values; unreadable values are skipped.
Tree build_tree(Source& src, const ConvertOptions& o, ConvertResult& result) {
  const Metadata& md = src.metadata();
  const FlattenMapping mapping = decode_flatten_mapping(md.planner_data);
  std::vector<std::string> only;
  for (std::string p : o.only) {
    while (!p.empty() && p.back() == '.') p.pop_back();
    if (p.empty()) throw InvalidArgumentError("an empty --only prefix selects nothing");
    only.push_back(p);
  }
  Tree tree;
  Dict flat;
  FlattenMapping m;
  std::vector<std::string> value_keys;
  size_t selected = 0;
  for (const auto& [key, entry] : md.state_dict_metadata) {
    if (!only.empty() && !key_matches(key, only)) continue;
    ++selected;
    auto bad = src.unreadable().find(key);
    if (bad != src.unreadable().end()) {
      result.skipped.push_back(key + ": " + bad->second);
      continue;
    }
    if (auto mi = mapping.find(key); mi != mapping.end()) m.emplace(key, mi->second);
    if (const auto* t = std::get_if<TensorStorageMetadata>(&entry)) {
      OutTensor ot;
      ot.key = ot.name = key;
      ot.saved = t;
      ot.in_dtype = ot.out_dtype = t->properties.dtype;
      ot.sizes = t->size;
      if (o.dtype && at::isFloatingType(ot.in_dtype) && ot.in_dtype != *o.dtype)
        ot.out_dtype = *o.dtype;
      tree.tensors.push_back(std::move(ot));
      flat.emplace(key, tree.placeholder(tree.tensors.size() - 1));
    } else {
      value_keys.push_back(key);
    }
  }
  if (!only.empty() && selected == 0) {
    std::string some;
    size_t n = 0;
    for (const auto& [key, entry] : md.state_dict_metadata) {
      if (n++ == 5) break;
      some += (some.empty() ? "'" : ", '") + key + "'";
    }
    throw InvalidArgumentError("no key of the checkpoint matches --only (it has " +
                               std::to_string(md.state_dict_metadata.size()) + " keys: " + some +
                               (md.state_dict_metadata.size() > 5 ? ", ..." : "") + ")");
  }
  for (auto& [key, v] : src.read_values(value_keys)) flat[key] = std::move(v);
  tree.root = unflatten_state_dict(flat, m);
  return tree;
}

// The leaves of the tree by flat key (the nesting flattened as dcp++ does).
Dict flat_leaves(const Tree& tree) { return flatten_state_dict(tree.root).first; }

uint64_t total_bytes(const Tree& tree, const std::vector<size_t>& order) {
  uint64_t n = 0;
  for (size_t i : order) n += tree.tensors[i].out_bytes();
  return n;
}

size_t converted(const Tree& tree, const std::vector<size_t>& order) {
  size_t n = 0;
  for (size_t i : order) n += tree.tensors[i].in_dtype != tree.tensors[i].out_dtype;
  return n;
}

// ---------------------------------------------------------------------------
// torch: one torch.save archive

void pickle_tree(py::PickleWriter& w, const Tree& tree, const Value& v, const std::string& path,
                 std::vector<size_t>& order, std::vector<int64_t>& storage_key);

// A dict of the tree (in place: Tree::int_keys names dicts by address).
void pickle_dict(py::PickleWriter& w, const Tree& tree, const Dict& d, const std::string& path,
                 std::vector<size_t>& order, std::vector<int64_t>& storage_key) {
  const bool ints = tree.int_keys.count(&d) > 0;
  w.empty_dict();
  if (d.empty()) return;
  w.mark();
  for (const auto& [k, child] : d) {
    if (ints)
      w.integer(std::stoll(k));
    else
      w.str(k);
    pickle_tree(w, tree, child, path.empty() ? k : path + "." + k, order, storage_key);
  }
  w.setitems();
}

void pickle_tree(py::PickleWriter& w, const Tree& tree, const Value& v, const std::string& path,
                 std::vector<size_t>& order, std::vector<int64_t>& storage_key) {
  if (const OutTensor* t = tree.tensor(v)) {
    const size_t i = tree.index(v);
    storage_key[i] = static_cast<int64_t>(order.size());
    order.push_back(i);
    pickle_tensor(w, std::to_string(storage_key[i]), t->out_dtype, t->sizes,
                  /*requires_grad=*/false, "key '" + path + "'");
    return;
  }
  if (v.is_dict()) return pickle_dict(w, tree, v.dict(), path, order, storage_key);
  if (v.is_list()) {
    w.empty_list();
    if (v.list().empty()) return;
    w.mark();
    for (size_t i = 0; i < v.list().size(); ++i)
      pickle_tree(w, tree, v.list()[i], path + "." + std::to_string(i), order, storage_key);
    w.appends();
    return;
  }
  pickle_plain_value(w, v, "key '" + path + "'");
}

void write_torch(Source& src, Tree& tree, Env& env, const std::string& tmp, const ConvertOptions& o,
                 ConvertResult& result) {
  mark_python_optimizer_state(tree);
  py::PickleWriter w;
  std::vector<size_t> order;
  std::vector<int64_t> storage_key(tree.tensors.size(), -1);
  pickle_dict(w, tree, tree.root, "", order, storage_key);
  const std::string pkl = w.finish();

  Progress progress(o.progress, total_bytes(tree, order));
  FileSink out(env, tmp, o.sync);
  ZipWriter zip("archive", [&](const void* data, size_t n) { out.write(data, n); });
  zip.add("data.pkl", pkl);
  zip.add("byteorder", "little");
  stream(
      src, tree.tensors, order, o.buffer_bytes,
      [&](size_t ti, uint64_t offset, const void* data, size_t n) {
        const uint64_t size = tree.tensors[ti].out_bytes();
        if (offset == 0) zip.begin("data/" + std::to_string(storage_key[ti]), size);
        zip.append(data, n);
        if (offset + n == size) zip.end();
      },
      progress);
  zip.finish();
  src.finish();
  out.finish();
  progress.done();
  result.tensors = order.size();
  result.bytes = progress.bytes();
  result.converted = converted(tree, order);
}

// ---------------------------------------------------------------------------
// safetensors: Hugging Face's layout

const SafetensorsDtype& safetensors_dtype(at::ScalarType t, const std::string& key) {
  for (const SafetensorsDtype& d : kSafetensorsDtypes)
    if (d.type == t) return d;
  throw InvalidArgumentError("key '" + key + "' is " + dtype_name(t) +
                             ": safetensors has no such dtype (it has BOOL, U8, I8, I16, F16, "
                             "BF16, I32, F32, C64, F64, I64 of LibTorch 1.13's)");
}

void write_safetensors(Source& src, Tree& tree, Env& env, const std::string& tmp,
                       const ConvertOptions& o, ConvertResult& result) {
  struct Entry {
    std::string name;
    size_t tensor;
    int rank;
    uint64_t begin = 0, end = 0;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : flat_leaves(tree)) {
    if (const OutTensor* t = tree.tensor(v)) {
      entries.push_back(Entry{name, tree.index(v), safetensors_dtype(t->out_dtype, name).rank});
    } else {
      const std::string kind = v.kind_name();
      result.skipped.push_back(name + (kind.find_first_of("aeiou") == 0 ? ": an " : ": a ") + kind +
                               ", not a tensor (safetensors holds tensors only)");
    }
  }
  // Shards: greedily in key order, a new one when the next tensor would
  // take the current one past the limit (Hugging Face's split).
  std::vector<std::vector<Entry>> shards(1);
  uint64_t in_shard = 0;
  for (Entry& e : entries) {
    const uint64_t n = tree.tensors[e.tensor].out_bytes();
    if (o.max_shard_bytes && !shards.back().empty() && in_shard + n > o.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(std::move(e));
    in_shard += n;
  }
  const size_t nfiles = shards.size();
  std::vector<std::string> names(nfiles);
  std::vector<std::string> headers(nfiles);
  std::vector<size_t> order;
  std::vector<size_t> file_of(tree.tensors.size(), 0);
  std::vector<size_t> last_of(nfiles, SIZE_MAX);  // the last tensor of each file
  uint64_t total = 0;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t f = 0; f < nfiles; ++f) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", f + 1, nfiles);
    names[f] = nfiles == 1 ? "model.safetensors" : buf;
    auto& es = shards[f];
    std::sort(es.begin(), es.end(), [](const Entry& a, const Entry& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.name < b.name;
    });
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    h["__metadata__"] = {{"format", "pt"}};
    uint64_t at = 0;
    for (Entry& e : es) {
      const OutTensor& t = tree.tensors[e.tensor];
      e.begin = at;
      e.end = at += t.out_bytes();
      h[e.name] = {{"dtype", safetensors_dtype(t.out_dtype, e.name).name},
                   {"shape", t.sizes},
                   {"data_offsets", {e.begin, e.end}}};
      order.push_back(e.tensor);
      file_of[e.tensor] = f;
      last_of[f] = e.tensor;
      weight_map[e.name] = names[f];
    }
    total += at;
    std::string json;
    try {
      json = h.dump();
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgumentError("the safetensors header of " + names[f] +
                                 " cannot be written: " + e.what() + " (a key that is not UTF-8?)");
    }
    json.append((8 - json.size() % 8) % 8, ' ');
    if (json.size() > 100000000)
      throw InvalidArgumentError("the safetensors header of " + names[f] + " would be " +
                                 std::to_string(json.size()) +
                                 " bytes, above the format's limit of 100,000,000");
    const uint64_t n = json.size();
    headers[f] = std::string(reinterpret_cast<const char*>(&n), 8) + json;
  }

  env.create_dirs(tmp);
  Progress progress(o.progress, total);
  std::unique_ptr<FileSink> out;
  size_t open_file = SIZE_MAX;
  auto open = [&](size_t f) {
    out = std::make_unique<FileSink>(env, join_path(tmp, names[f]), o.sync);
    out->write(headers[f].data(), headers[f].size());
    open_file = f;
  };
  auto close = [&] {
    if (out) out->finish();
    out.reset();
  };
  // Files without tensors (only when there are none at all) are header only.
  for (size_t f = 0; f < nfiles; ++f)
    if (shards[f].empty()) {
      open(f);
      close();
    }
  stream(
      src, tree.tensors, order, o.buffer_bytes,
      [&](size_t ti, uint64_t offset, const void* data, size_t n) {
        const size_t f = file_of[ti];
        if (f != open_file) {
          close();
          open(f);
        }
        out->write(data, n);
        if (ti == last_of[f] && offset + n == tree.tensors[ti].out_bytes()) {
          close();
          open_file = SIZE_MAX;
        }
      },
      progress);
  close();
  if (nfiles > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    FileSink f(env, join_path(tmp, "model.safetensors.index.json"), o.sync);
    f.write(text.data(), text.size());
    f.finish();
    names.push_back("model.safetensors.index.json");
  }
  src.finish();
  if (o.sync) env.sync_dir(tmp);
  progress.done();
  result.tensors = order.size();
  result.bytes = progress.bytes();
  result.converted = converted(tree, order);
  result.files = names;
}

// ---------------------------------------------------------------------------
// dcp++ and pytorch-dcp: dcp::save, each item read when the writer asks

// Buffers of one size, reused: a tensor from take() gives its memory back
// when its last handle goes.
class BufferShelf : public std::enable_shared_from_this<BufferShelf> {
 public:
  explicit BufferShelf(size_t size) : size_(std::max<size_t>(size, 64)) {}
  std::shared_ptr<char> take() {
    std::unique_ptr<char[]> b;
    {
      MutexLock lock(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!b) b.reset(new char[size_]);
    auto self = shared_from_this();
    return std::shared_ptr<char>(b.release(), [self](char* p) {
      MutexLock lock(self->mu_);
      self->free_.emplace_back(p);
    });
  }

 private:
  size_t size_;
  Mutex mu_;
  std::vector<std::unique_ptr<char[]>> free_ DCP_GUARDED_BY(mu_);
};

class StreamingSavePlanner final : public DefaultSavePlanner {
 public:
  struct Piece {
    size_t tensor;
    Box box;
  };
  StreamingSavePlanner(Source& src, const Tree& tree, size_t cap, Progress& progress)
      : src_(src), tree_(tree), shelf_(std::make_shared<BufferShelf>(cap)), progress_(progress) {}

  std::unordered_map<const void*, Piece> pieces;  // placeholder's TensorImpl -> what it stands for

  WriteData resolve_data(const WriteItem& item) override {
    if (item.type == WriteItemType::kByteIO) return DefaultSavePlanner::resolve_data(item);
    const Value v = lookup_object(item.index);
    auto it = pieces.find(v.tensor().unsafeGetTensorImpl());
    if (it == pieces.end())
      throw Error(ErrorCode::kInternal, "convert: no source for " + to_string(item.index));
    const OutTensor& t = tree_.tensors[it->second.tensor];
    const Box& box = it->second.box;
    std::shared_ptr<char> in = shelf_->take();
    at::Tensor dst = at::from_blob(in.get(), box.sizes, at::TensorOptions().dtype(t.in_dtype));
    {
      MutexLock lock(read_mu_);
      src_.read({ReadPiece{&t, box, dst}});
    }
    if (t.in_dtype != t.out_dtype) {
      std::shared_ptr<char> out = shelf_->take();
      at::Tensor conv = at::from_blob(
          out.get(), box.sizes, [out](void*) {}, at::TensorOptions().dtype(t.out_dtype));
      conv.copy_(dst);
      dst = conv;
    } else {
      dst = at::from_blob(
          in.get(), box.sizes, [in](void*) {}, at::TensorOptions().dtype(t.in_dtype));
    }
    progress_.add(dst.nbytes());
    return dst;
  }

 private:
  Source& src_;
  const Tree& tree_;
  std::shared_ptr<BufferShelf> shelf_;
  Progress& progress_;
  Mutex read_mu_;  // one read of src_ at a time
};

// The tree for dcp::save: each tensor placeholder becomes a meta tensor
// (one piece) or a ShardedTensor of pieces of at most `cap` bytes.
Value save_tree(const Value& v, const Tree& tree, uint64_t cap, StreamingSavePlanner& planner,
                std::vector<size_t>& order) {
  if (const OutTensor* t = tree.tensor(v)) {
    const size_t i = tree.index(v);
    order.push_back(i);
    const uint64_t elem = std::max(c10::elementSize(t->in_dtype), c10::elementSize(t->out_dtype));
    std::vector<Box> boxes = windows_of(t->sizes, elem, cap);
    auto meta = [&](const std::vector<int64_t>& sizes) {
      return at::empty(sizes, at::TensorOptions().dtype(t->out_dtype).device(at::kMeta));
    };
    if (boxes.size() == 1) {
      at::Tensor m = meta(t->sizes);
      planner.pieces.emplace(m.unsafeGetTensorImpl(),
                             StreamingSavePlanner::Piece{i, std::move(boxes[0])});
      return m;
    }
    ShardedTensor st;
    st.global_size = t->sizes;
    for (Box& b : boxes) {
      at::Tensor m = meta(b.sizes);
      st.local_shards.push_back(Shard{m, b.offsets});
      planner.pieces.emplace(m.unsafeGetTensorImpl(), StreamingSavePlanner::Piece{i, std::move(b)});
    }
    return st;
  }
  if (v.is_dict()) {
    Dict d;
    for (const auto& [k, child] : v.dict())
      d.emplace(k, save_tree(child, tree, cap, planner, order));
    return d;
  }
  if (v.is_list()) {
    List l;
    for (const Value& child : v.list()) l.push_back(save_tree(child, tree, cap, planner, order));
    return l;
  }
  return v;
}

// FileSystemWriterOptions for a dcp++ or PyTorch DCP target.
FileSystemWriterOptions writer_options(const ConvertOptions& o, Env* env) {
  FileSystemWriterOptions w;
  w.env = env;
  w.threads = std::max(1, o.threads);
  w.sync_files = o.sync;
  if (o.to == ConvertFormat::kPyTorchDcp) {
    check_pytorch_version(o.pytorch_version);
    w.format = StorageFormat::kPyTorchDcp;
    w.pytorch_version = o.pytorch_version;
  }
  return w;
}

void write_dcp(Source& src, Tree& tree, Env& env, const std::string& tmp, const std::string& tmp_id,
               const ConvertOptions& o, ConvertResult& result) {
  const FileSystemWriterOptions wo = writer_options(o, &env);
  std::vector<size_t> order;
  Progress progress(o.progress, 0);
  auto planner = std::make_shared<StreamingSavePlanner>(src, tree, o.buffer_bytes, progress);
  Value root = save_tree(Value(tree.root), tree, o.buffer_bytes, *planner, order);
  progress.set_total(total_bytes(tree, order));
  SaveOptions so;
  so.checkpoint_id = tmp_id;
  so.storage_writer = make_filesystem_writer(tmp, wo);
  so.planner = planner;
  save(root.dict(), so);
  src.finish();
  progress.done();
  result.tensors = order.size();
  result.bytes = progress.bytes();
  result.converted = converted(tree, order);
  result.files = env.list_dir(tmp);
  std::sort(result.files.begin(), result.files.end());
}

size_t count_values(const Tree& tree) {
  size_t n = 0;
  for (const auto& [name, v] : flat_leaves(tree))
    if (!tree.tensor(v)) ++n;
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------
// Tree

namespace internal {
namespace convert {

Value Tree::placeholder(size_t i) {
  const OutTensor& t = tensors.at(i);
  at::Tensor m = at::empty(t.sizes, at::TensorOptions().dtype(t.out_dtype).device(at::kMeta));
  tensor_of.emplace(m.unsafeGetTensorImpl(), i);
  return m;
}

size_t Tree::index(const Value& leaf) const {
  return tensor_of.at(leaf.tensor().unsafeGetTensorImpl());
}

const OutTensor* Tree::tensor(const Value& leaf) const {
  if (!leaf.is_tensor()) return nullptr;
  auto it = tensor_of.find(leaf.tensor().unsafeGetTensorImpl());
  return it == tensor_of.end() ? nullptr : &tensors[it->second];
}

}  // namespace convert
}  // namespace internal

// ---------------------------------------------------------------------------
// convert()

ConvertResult convert(const std::string& src, const std::string& dst,
                      const ConvertOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.dtype && !at::isFloatingType(*options.dtype))
    throw InvalidArgumentError(std::string("ConvertOptions::dtype must be a floating dtype, not ") +
                               dtype_name(*options.dtype));
  if (options.max_shard_bytes && options.to != ConvertFormat::kSafetensors)
    throw InvalidArgumentError("a maximum shard size applies to --to safetensors only");
  if (dst.empty()) throw InvalidArgumentError("no destination was given");
  Env& env = options.env ? *options.env : *env_for(dst);
  const std::string dpath = options.env ? dst : env_path(dst);
  std::string scheme = dst.substr(0, dst.size() - env_path(dst).size());
  if (exists(env, dpath) && !options.overwrite)
    throw AlreadyExistsError("'" + dst +
                             "' exists; refusing to replace it (--overwrite replaces it)");
  if (options.to == ConvertFormat::kPyTorchDcp) check_pytorch_version(options.pytorch_version);

  ConvertResult result;
  Source source(src, options);
  Tree tree = build_tree(source, options, result);
  if (options.optimizer_layout == ConvertOptimizerLayout::kPyTorch) {
    const std::vector<std::string> done = optimizers_to_pytorch(tree);
    if (done.empty())
      logger().warn(
          "convert: no optimizer state in dcp++'s layout was found for --optimizer-layout");
  }

  const std::string parent = parent_of(dpath);
  env.create_dirs_durably(parent, options.sync);
  const std::string id = random_hex();
  const std::string tmp = dpath + ".tmp-" + id;
  try {
    switch (options.to) {
      case ConvertFormat::kTorchSave:
        write_torch(source, tree, env, tmp, options, result);
        break;
      case ConvertFormat::kSafetensors:
        write_safetensors(source, tree, env, tmp, options, result);
        break;
      case ConvertFormat::kDcp:
      case ConvertFormat::kPyTorchDcp:
        write_dcp(source, tree, env, tmp, scheme + tmp, options, result);
        break;
    }
    // In place: a file is replaced by the rename; a directory is moved
    // aside first (a rename cannot replace a non-empty one) and removed
    // once the new one is in place.
    if (exists(env, dpath)) {
      if (!options.overwrite)
        throw AlreadyExistsError("'" + dst + "' appeared while converting; it was left alone");
      if (env.dir_exists(dpath) || env.dir_exists(tmp)) {
        const std::string old = dpath + ".old-" + id;
        env.rename_file(dpath, old);
        env.rename_file(tmp, dpath);
        if (options.sync) env.sync_dir(parent);
        env.remove_dir_recursively(old);
      } else {
        env.rename_file(tmp, dpath);
      }
    } else {
      env.rename_file(tmp, dpath);
    }
    if (options.sync) env.sync_dir(parent);
  } catch (...) {
    try {
      env.remove_dir_recursively(tmp);
    } catch (const Error& e) {
      logger().warn("convert: could not remove '{}': {}", tmp, e.what());
    }
    throw;
  }
  if (options.to == ConvertFormat::kTorchSave) result.files = {base_of(dpath)};
  result.values = options.to == ConvertFormat::kSafetensors ? 0 : count_values(tree);
  if (!result.skipped.empty()) {
    std::string list;
    for (size_t i = 0; i < result.skipped.size() && i < 10; ++i)
      list += (i ? "; " : "") + result.skipped[i];
    logger().warn("convert: {} key(s) left out: {}{}", result.skipped.size(), list,
                  result.skipped.size() > 10 ? "; ..." : "");
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace dcp
