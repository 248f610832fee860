// The catalog of a safetensors file, or of a directory of them (a Hugging
// Face checkpoint, with or without model.safetensors.index.json; DCP's
// HuggingFaceStorageWriter output, whose files may each hold one chunk of a
// tensor). interop.md section 4.
//
// A file: u64 little-endian N, N bytes of JSON (an object: tensor name ->
// {dtype, shape, data_offsets: [begin, end)} relative to the buffer, and an
// optional "__metadata__" of strings), then the buffer. Each header is read
// with one or two small reads and validated as the format's reference
// reader (safetensors/src/tensor.rs) does, plus duplicate keys, which a JSON
// parser would silently merge.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "chunk_validation.h"
#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "env.h"
#include "interop/catalog.h"
#include "interop/safetensors_dtypes.h"

namespace dcp {
namespace internal {

namespace {

using json = nlohmann::json;

constexpr const char kIndexName[] = "model.safetensors.index.json";
constexpr const char kSuffix[] = ".safetensors";
constexpr uint64_t kMaxHeader = 100'000'000;  // the format's limit (tensor.rs MAX_HEADER_SIZE)
constexpr uint64_t kFirstRead = 16 * 1024;    // the length and (usually) the whole header
constexpr const char kMetadataKey[] = "__metadata__";
constexpr const char kShardingKey[] = "DCP_SHARDING_INFO";

std::string q(const std::string& s) { return "'" + s + "'"; }
std::string num(uint64_t v) { return std::to_string(v); }

// A JSON value short enough for a message.
std::string brief(const json& j) {
  std::string s = j.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// A key seen twice in one JSON object: `parents` are the keys of the
// objects around it, outermost first.
struct DuplicateKey {
  std::vector<std::string> parents;
  std::string key;
};

// Parses JSON text, throwing DuplicateKey for a key repeated in an object
// (nlohmann keeps the last one silently), and a CorruptionError starting
// with `not_json` for text that is not JSON — a NUL byte included, which
// nlohmann takes for the end of the input.
json parse_unique(std::string_view text, const std::string& not_json) {
  const size_t nul = text.find('\0');
  if (nul != std::string_view::npos)
    throw CorruptionError(not_json + ": a NUL byte at byte " + std::to_string(nul));
  struct Frame {
    std::set<std::string> keys;
    std::string last;
  };
  std::vector<Frame> frames;
  auto cb = [&frames](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        frames.emplace_back();
        break;
      case json::parse_event_t::key: {
        Frame& f = frames.back();
        f.last = parsed.get<std::string>();
        if (!f.keys.insert(f.last).second) {
          DuplicateKey d;
          for (size_t i = 0; i + 1 < frames.size(); ++i) d.parents.push_back(frames[i].last);
          d.key = f.last;
          throw d;
        }
        break;
      }
      case json::parse_event_t::object_end:
        frames.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    throw CorruptionError(not_json + ": " + e.what());
  }
}

// One tensor entry of a file's header.
struct Entry {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::string dtype_name;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;   // in the buffer
  std::vector<int64_t> offsets;  // in the whole tensor (DCP_SHARDING_INFO), else zeros
  bool sharded = false;          // named in the file's DCP_SHARDING_INFO
};

struct File {
  std::string path;         // in the Env
  std::string rel;          // relative to the checkpoint (its base name for a single file)
  std::string shown;        // quoted, for messages
  uint64_t data_start = 0;  // 8 + N
  std::vector<Entry> entries;
};

uint64_t le64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

// A non-negative integer that fits in int64, else nullopt.
std::optional<int64_t> as_index(const json& j) {
  if (!j.is_number_unsigned()) return std::nullopt;
  const uint64_t v = j.get<uint64_t>();
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(v);
}

// The DCP_SHARDING_INFO of a file: fqn -> saved_offsets.
std::map<std::string, std::vector<int64_t>> parse_sharding_info(const std::string& text,
                                                                const File& f) {
  const std::string where = "the " + std::string(kShardingKey) + " of " + f.shown;
  json j;
  try {
    j = parse_unique(text, where + " is not valid JSON");
  } catch (const DuplicateKey& d) {
    throw CorruptionError(where + " names " + (d.parents.empty() ? "tensor " : "key ") + q(d.key) +
                          " twice" +
                          (d.parents.empty() ? "" : " (in the entry of " + q(d.parents[0]) + ")"));
  }
  if (!j.is_object()) throw CorruptionError(where + " is not a JSON object: " + brief(j));
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [fqn, v] : j.items()) {
    const std::string what = where + ", tensor " + q(fqn);
    if (!v.is_object() || !v.contains("saved_offsets"))
      throw CorruptionError(what + ": not an object with \"saved_offsets\": " + brief(v));
    const json& offs = v["saved_offsets"];
    if (!offs.is_array())
      throw CorruptionError(what + ": \"saved_offsets\" is not a list: " + brief(offs));
    std::vector<int64_t> o;
    for (const auto& x : offs) {
      const auto i = as_index(x);
      if (!i)
        throw CorruptionError(what + ": \"saved_offsets\" " + brief(offs) +
                              " holds something other than a non-negative integer");
      o.push_back(*i);
    }
    out.emplace(fqn, std::move(o));
  }
  return out;
}

// Reads and validates the header of one file.
void read_header(Env& env, File& f) {
  auto file = env.new_random_access_file(f.path);
  const uint64_t size = file->size();
  if (size < 8)
    throw CorruptionError(f.shown + " is " + num(size) +
                          " bytes: too short for a safetensors file (it starts with the 8-byte "
                          "length of its header)");
  std::string head(static_cast<size_t>(std::min(size, kFirstRead)), '\0');
  if (file->read(0, head.size(), head.data()) != head.size())
    throw CorruptionError(f.shown + " is shorter than its size " + num(size) + " (truncated?)");
  const uint64_t n = le64(head.data());
  if (n > kMaxHeader)
    throw CorruptionError("the header length of " + f.shown + " is " + num(n) +
                          " bytes, over the format's limit of " + num(kMaxHeader) +
                          " (not a safetensors file?)");
  if (n > size - 8)
    throw CorruptionError("the header length of " + f.shown + " is " + num(n) +
                          " bytes, past the end of the file (" + num(size) +
                          " bytes): truncated, or not a safetensors file");
  if (head.size() < 8 + n) {
    const size_t have = head.size();
    head.resize(static_cast<size_t>(8 + n));
    if (file->read(have, head.size() - have, head.data() + have) != head.size() - have)
      throw CorruptionError(f.shown + " is shorter than its size " + num(size) + " (truncated?)");
  }
  head.resize(static_cast<size_t>(8 + n));
  const std::string_view text(head.data() + 8, static_cast<size_t>(n));
  f.data_start = 8 + n;
  if (text.empty() || text[0] != '{')
    throw CorruptionError("the header of " + f.shown + " (" + num(n) +
                          " bytes at offset 8) does not start with '{'");
  json h;
  try {
    // nlohmann's message gives the byte position in the header.
    h = parse_unique(text, "the header of " + f.shown + " is not valid UTF-8 JSON");
  } catch (const DuplicateKey& d) {
    if (d.parents.empty())
      throw CorruptionError("the header of " + f.shown + " has tensor " + q(d.key) + " twice");
    throw CorruptionError("the header of " + f.shown + " has key " + q(d.key) +
                          " twice in the entry of " +
                          (d.parents[0] == kMetadataKey ? "" : "tensor ") + q(d.parents[0]));
  }

  std::map<std::string, std::vector<int64_t>> sharding;
  bool has_sharding = false;
  for (const auto& [name, v] : h.items()) {
    if (name == kMetadataKey) {
      if (!v.is_object())
        throw CorruptionError("the __metadata__ of " + f.shown + " is not an object: " + brief(v));
      for (const auto& [k, s] : v.items())
        if (!s.is_string())
          throw CorruptionError("the __metadata__ of " + f.shown + " has a value for " + q(k) +
                                " that is not a string: " + brief(s));
      if (v.contains(kShardingKey)) {
        sharding = parse_sharding_info(v[kShardingKey].get<std::string>(), f);
        has_sharding = true;
      }
      continue;
    }
    const std::string what = "tensor " + q(name) + " in " + f.shown;
    if (!v.is_object()) throw CorruptionError(what + ": its entry is not an object: " + brief(v));
    for (const char* k : {"dtype", "shape", "data_offsets"})
      if (!v.contains(k)) throw CorruptionError(what + ": its entry has no \"" + k + "\"");
    Entry e;
    e.name = name;
    const json& dt = v["dtype"];
    if (!dt.is_string()) throw CorruptionError(what + ": its dtype is not a string: " + brief(dt));
    e.dtype_name = dt.get<std::string>();
    uint64_t elem_size = 0;
    for (const auto& d : kSafetensorsDtypes)
      if (e.dtype_name == d.name) e.dtype = d.type, elem_size = d.size;
    if (elem_size == 0) {
      for (const char* other : kSafetensorsOtherDtypes)
        if (e.dtype_name == other)
          throw InvalidArgumentError(what + " has dtype " + e.dtype_name +
                                     ": LibTorch 1.13 has no such dtype, so dcp++ cannot load it");
      throw CorruptionError(what + " has dtype " + brief(dt) +
                            ", which is not a safetensors dtype");
    }
    const json& shape = v["shape"];
    if (!shape.is_array())
      throw CorruptionError(what + ": its shape is not a list: " + brief(shape));
    // Elements, checked against overflow (none when a dimension is 0).
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : shape) {
      const auto i = as_index(d);
      if (!i)
        throw CorruptionError(what + ": its shape " + brief(shape) +
                              " holds something other than a non-negative integer");
      e.shape.push_back(*i);
    }
    for (int64_t d : e.shape) {
      if (d == 0) {
        numel = 0, overflow = false;
        break;
      }
      if (numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) overflow = true;
      numel *= static_cast<uint64_t>(d);
    }
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem_size)
      throw CorruptionError(what + ": its shape " + brief(shape) + " has more bytes than 2^64");
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      throw CorruptionError(what + ": its data_offsets " + brief(off) +
                            " are not [begin, end] (two non-negative integers)");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.end < e.begin)
      throw CorruptionError(what + ": its data_offsets " + brief(off) + " end before they begin");
    if (e.end - e.begin != numel * elem_size)
      throw CorruptionError(what + ": its data_offsets " + brief(off) + " hold " +
                            num(e.end - e.begin) + " bytes, its dtype " + e.dtype_name +
                            " and shape " + brief(shape) + " need " + num(numel * elem_size));
    e.offsets.assign(e.shape.size(), 0);
    f.entries.push_back(std::move(e));
  }

  // The buffer: the tensors back to back from 0, in offset order, to the
  // end of the file.
  std::sort(f.entries.begin(), f.entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    return a.end != b.end ? a.end < b.end : a.name < b.name;
  });
  uint64_t at = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : f.entries) {
    const std::string what = "tensor " + q(e.name) + " in " + f.shown;
    if (e.begin > at)
      throw CorruptionError(what + " starts at buffer offset " + num(e.begin) + ", " +
                            (prev ? "tensor " + q(prev->name) + " ends at " + num(at)
                                  : std::string("the buffer starts at 0")) +
                            ": a hole of " + num(e.begin - at) + " bytes");
    if (e.begin < at)
      throw CorruptionError(what + " at buffer offsets [" + num(e.begin) + ", " + num(e.end) +
                            ") overlaps tensor " + q(prev->name) + ", which ends at " + num(at));
    at = e.end;
    prev = &e;
  }
  if (at != size - f.data_start)
    throw CorruptionError(
        f.shown + " is " + num(size) + " bytes, its header says 8 + " + num(n) + " + " + num(at) +
        " = " + num(f.data_start + at) + " (" +
        (prev ? "the last tensor, " + q(prev->name) + ", ends at buffer offset " + num(at)
              : std::string("no tensors")) +
        "): " + (at > size - f.data_start ? "truncated" : "bytes after the last tensor"));

  // DCP_SHARDING_INFO: the chunk each tensor of the file is.
  if (has_sharding) {
    std::map<std::string, Entry*> by_name;
    for (Entry& e : f.entries) by_name[e.name] = &e;
    for (auto& [fqn, offsets] : sharding) {
      const auto it = by_name.find(fqn);
      if (it == by_name.end())
        throw CorruptionError("the " + std::string(kShardingKey) + " of " + f.shown +
                              " names tensor " + q(fqn) + ", which is not in the file");
      Entry& e = *it->second;
      if (offsets.size() != e.shape.size())
        throw CorruptionError("the " + std::string(kShardingKey) + " of " + f.shown +
                              " gives tensor " + q(fqn) + " offsets " + shape_str(offsets) +
                              " for its shape " + shape_str(e.shape));
      for (size_t d = 0; d < offsets.size(); ++d)
        if (offsets[d] > std::numeric_limits<int64_t>::max() - e.shape[d])
          throw CorruptionError("the " + std::string(kShardingKey) + " of " + f.shown +
                                " gives tensor " + q(fqn) + " offsets " + shape_str(offsets) +
                                " that overflow with its shape " + shape_str(e.shape));
      e.offsets = std::move(offsets);
      e.sharded = true;
    }
  }
}

// A tensor's chunks, one per file that holds it.
struct Piece {
  const File* file;
  const Entry* entry;
};

bool boxes_overlap(const Entry& a, const Entry& b) {
  for (size_t d = 0; d < a.offsets.size(); ++d)
    if (a.offsets[d] >= b.offsets[d] + b.shape[d] || b.offsets[d] >= a.offsets[d] + a.shape[d])
      return false;
  return true;
}

std::string piece_str(const Piece& p) {
  return "the chunk at " + shape_str(p.entry->offsets) + " of size " + shape_str(p.entry->shape) +
         " in " + p.file->shown;
}

// Checks the chunks of one tensor together and returns its global size.
std::vector<int64_t> check_pieces(const std::string& fqn, std::vector<Piece>& pieces) {
  const Piece& first = pieces.front();
  // A name in several files: chunks of one tensor, each file saying where
  // its chunk lies (DCP's HuggingFaceStorageWriter); else an error.
  if (pieces.size() > 1)
    for (const Piece& p : pieces)
      if (!p.entry->sharded)
        throw CorruptionError("tensor " + q(fqn) + " is in both " +
                              (&p == &first ? pieces[1] : first).file->shown + " and " +
                              p.file->shown + ", and " + p.file->shown + " does not say (in " +
                              kShardingKey + ") which chunk of it it holds");
  const size_t ndim = first.entry->shape.size();
  std::vector<int64_t> size(ndim, 0);
  for (const Piece& p : pieces) {
    if (p.entry->dtype != first.entry->dtype)
      throw CorruptionError("tensor " + q(fqn) + " is " + first.entry->dtype_name + " in " +
                            first.file->shown + " but " + p.entry->dtype_name + " in " +
                            p.file->shown);
    if (p.entry->shape.size() != ndim)
      throw CorruptionError("tensor " + q(fqn) + " has " + num(ndim) + " dimension(s) in " +
                            first.file->shown + " but " + num(p.entry->shape.size()) + " in " +
                            p.file->shown);
    for (size_t d = 0; d < ndim; ++d)
      size[d] = std::max(size[d], p.entry->offsets[d] + p.entry->shape[d]);
  }
  // One chunk per offset (the offsets name the item), then no shared
  // element (a sweep along dimension 0 when there is one), then every
  // element in some chunk.
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.entry->offsets < b.entry->offsets; });
  for (size_t i = 1; i < pieces.size(); ++i)
    if (pieces[i].entry->offsets == pieces[i - 1].entry->offsets)
      throw CorruptionError("tensor " + q(fqn) + ": " + piece_str(pieces[i - 1]) + " and " +
                            piece_str(pieces[i]) + " start at the same offsets");
  const int64_t total = checked_volume(size);
  if (total < 0)
    throw CorruptionError("tensor " + q(fqn) + " of size " + shape_str(size) +
                          " (from its chunks' offsets) has more elements than int64 counts");
  std::vector<const Piece*> nonempty;
  for (const Piece& p : pieces)
    if (checked_volume(p.entry->shape) > 0) nonempty.push_back(&p);
  if (ndim > 0) {
    std::vector<const Piece*> active;
    for (const Piece* p : nonempty) {  // sorted by offsets, so by offsets[0]
      const int64_t start = p->entry->offsets[0];
      active.erase(std::remove_if(active.begin(), active.end(),
                                  [&](const Piece* a) {
                                    return a->entry->offsets[0] + a->entry->shape[0] <= start;
                                  }),
                   active.end());
      for (const Piece* a : active)
        if (boxes_overlap(*a->entry, *p->entry))
          throw CorruptionError("tensor " + q(fqn) + ": " + piece_str(*a) + " and " +
                                piece_str(*p) + " overlap");
      active.push_back(p);
    }
  }
  // Disjoint boxes inside the tensor: the sum cannot overflow.
  int64_t covered = 0;
  for (const Piece* p : nonempty) covered += checked_volume(p->entry->shape);
  if (covered != total)
    throw CorruptionError(
        "tensor " + q(fqn) + ": its chunks (in " + num(pieces.size()) +
        (pieces.size() == 1 ? " file: " + first.file->shown : std::string(" files")) + ") cover " +
        num(covered) + " of the " + num(total) + " elements of its size " + shape_str(size) +
        " (a chunk is missing)");
  return size;
}

// The file names of the index's weight_map, checked to be in `dir`; and
// the map itself.
std::vector<std::string> read_index(Env& env, const std::string& dir, const std::string& shown_dir,
                                    std::map<std::string, std::string>& weight_map) {
  const std::string path = join_path(dir, kIndexName);
  const std::string shown = q(join_path(shown_dir, kIndexName));
  const std::string text = env.read_file(path);
  json j;
  try {
    j = parse_unique(text, shown + " is not valid JSON");
  } catch (const DuplicateKey& d) {
    throw CorruptionError(shown + " has key " + q(d.key) + " twice" +
                          (d.parents.empty() ? "" : " in " + q(d.parents.back())));
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw CorruptionError(shown + " has no \"weight_map\" object");
  std::set<std::string> files;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string())
      throw CorruptionError("the weight_map of " + shown + " maps tensor " + q(name) +
                            " to something other than a file name: " + brief(file));
    const std::string f = file.get<std::string>();
    // A file of the checkpoint, not one elsewhere.
    const bool escapes = f.empty() || f[0] == '/' || f == ".." || f.rfind("../", 0) == 0 ||
                         f.find("/../") != std::string::npos ||
                         (f.size() >= 3 && f.compare(f.size() - 3, 3, "/..") == 0);
    if (escapes)
      throw CorruptionError("the weight_map of " + shown + " maps tensor " + q(name) + " to file " +
                            q(f) + ", which is not a file name inside " + q(shown_dir));
    weight_map[name] = f;
    files.insert(f);
  }
  for (const std::string& f : files)
    if (!env.file_exists(join_path(dir, f)))
      throw CorruptionError(shown + " maps tensors to " + q(f) + ", which is not in " +
                            q(shown_dir));
  return {files.begin(), files.end()};
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

std::string base_name(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

}  // namespace

Catalog safetensors_catalog(Env& env, const std::string& path, const std::string& display) {
  Catalog cat;
  std::vector<File> files;
  std::map<std::string, std::string> weight_map;
  bool indexed = false;
  if (env.file_exists(path)) {
    cat.format = "safetensors";
    File f;
    f.path = path;
    f.rel = base_name(path);
    f.shown = q(display);
    files.push_back(std::move(f));
  } else if (env.dir_exists(path)) {
    cat.format = "Hugging Face safetensors directory";
    std::vector<std::string> names;
    if (env.file_exists(join_path(path, kIndexName))) {
      names = read_index(env, path, display, weight_map);
      indexed = true;
    } else {
      for (const std::string& n : env.list_dir(path))
        if (ends_with(n, kSuffix) && env.file_exists(join_path(path, n))) names.push_back(n);
      std::sort(names.begin(), names.end());
      if (names.empty())
        throw NotFoundError("'" + display + "' has neither " + kIndexName +
                            " nor any *.safetensors file");
    }
    for (const std::string& n : names) {
      File f;
      f.path = join_path(path, n);
      f.rel = n;
      f.shown = q(join_path(display, n));
      files.push_back(std::move(f));
    }
  } else {
    throw NotFoundError("no safetensors file or directory '" + display + "'");
  }

  for (File& f : files) read_header(env, f);

  std::map<std::string, std::vector<Piece>> tensors;
  for (const File& f : files)
    for (const Entry& e : f.entries) tensors[e.name].push_back(Piece{&f, &e});

  if (indexed) {
    for (const auto& [name, file] : weight_map) {
      const auto it = tensors.find(name);
      const File* in = nullptr;
      if (it != tensors.end())
        for (const Piece& p : it->second)
          if (p.file->rel == file) in = p.file;
      if (!in)
        throw CorruptionError(
            "the weight_map of " + q(join_path(display, kIndexName)) + " puts tensor " + q(name) +
            " in " + q(join_path(display, file)) + ", which does not hold it" +
            (it != tensors.end() ? " (" + it->second.front().file->shown + " does)"
                                 : std::string()));
    }
    for (const auto& [name, pieces] : tensors)
      if (!weight_map.count(name))
        throw CorruptionError("tensor " + q(name) + " in " + pieces.front().file->shown +
                              " is not in the weight_map of " + q(join_path(display, kIndexName)));
  }

  FlattenMapping mapping;
  for (auto& [fqn, pieces] : tensors) {
    TensorStorageMetadata tm;
    tm.size = check_pieces(fqn, pieces);
    tm.properties.dtype = pieces.front().entry->dtype;
    for (const Piece& p : pieces) {
      const Entry& e = *p.entry;
      tm.chunks.push_back(ChunkStorageMetadata{e.offsets, e.shape});
      const MetadataIndex index(fqn, e.offsets);
      StorageInfo info;
      info.relative_path = p.file->rel;
      info.offset = p.file->data_start + e.begin;
      info.length = e.end - e.begin;
      cat.metadata.storage_data.emplace(index, info);
      RawTensor raw;
      raw.file = p.file->path;
      raw.offset = info.offset;
      raw.storage_bytes = info.length;
      raw.dtype = e.dtype;
      raw.sizes = e.shape;
      raw.what = "tensor " + q(fqn) + " in " + p.file->shown;
      cat.sources.emplace(index, std::move(raw));
    }
    cat.metadata.state_dict_metadata.emplace(fqn, std::move(tm));
    mapping[fqn] = ObjectPath{PathElement{false, fqn, 0}};
  }
  cat.metadata.planner_data = encode_flatten_mapping(mapping);
  cat.metadata.world_size = 1;
  cat.metadata.storage_meta = StorageMeta{display, ""};
  return cat;
}

}  // namespace internal
}  // namespace dcp
