#include "dcp/metadata.h"

#include <unordered_map>

#include "codec.h"
#include "dcp/error.h"
#include "dcp/version.h"
#include "xxh3.h"

namespace dcp {

using namespace internal;

namespace {

struct DtypeName {
  at::ScalarType dtype;
  const char* name;
};

// The names are part of the on-disk format: never change one.
constexpr DtypeName kDtypes[] = {
    {at::kFloat, "float32"},
    {at::kDouble, "float64"},
    {at::kHalf, "float16"},
    {at::kBFloat16, "bfloat16"},
    {at::kChar, "int8"},
    {at::kShort, "int16"},
    {at::kInt, "int32"},
    {at::kLong, "int64"},
    {at::kByte, "uint8"},
    {at::kBool, "bool"},
    {at::kComplexHalf, "complex32"},
    {at::kComplexFloat, "complex64"},
    {at::kComplexDouble, "complex128"},
};

constexpr char kMagic[8] = {'D', 'C', 'P', 'P', 'M', 'E', 'T', 'A'};
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8 + 8;

}  // namespace

const char* dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  return c10::toString(dtype);
}

at::ScalarType dtype_from_name(std::string_view name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.dtype;
  throw InvalidArgumentError("unknown dtype '" + std::string(name) + "'");
}

void check_supported_dtype(at::ScalarType dtype, const std::string& what) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return;
  throw InvalidArgumentError(what + ": dtype " + c10::toString(dtype) +
                             " is not supported by dcp++ (quantized and bit types are not)");
}

std::string to_string(const MetadataIndex& index) {
  if (index.offset.empty()) return "'" + index.fqn + "'";
  std::string s = "'" + index.fqn + "' chunk at [";
  for (size_t i = 0; i < index.offset.size(); ++i)
    s += (i ? ", " : "") + std::to_string(index.offset[i]);
  return s + "]";
}

uint64_t Metadata::total_bytes() const {
  uint64_t n = 0;
  for (const auto& kv : storage_data) n += kv.second.length;
  return n;
}

std::string serialize_metadata(const Metadata& md) {
  // The header goes in front of the body once the body is known: room for it
  // first, then the body, encoded once into a buffer reserved generously
  // (pages never written cost nothing).
  codec::Encoder body;
  body.buffer().reserve(kHeaderSize + 4096 + 96 * md.state_dict_metadata.size() +
                        64 * md.storage_data.size());
  body.buffer().resize(kHeaderSize);
  body.str(md.library_version.empty() ? std::string(kVersion) : md.library_version);
  body.svarint(md.world_size);
  body.u8(md.storage_meta ? 1 : 0);
  if (md.storage_meta) {
    body.str(md.storage_meta->checkpoint_id);
    body.str(md.storage_meta->save_id);
  }
  body.str(md.planner_data);

  body.varint(md.state_dict_metadata.size());
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    body.str(fqn);
    if (const auto* t = std::get_if<TensorStorageMetadata>(&entry)) {
      body.u8(0);
      body.str(dtype_name(t->properties.dtype));
      body.u8(t->properties.requires_grad ? 1 : 0);
      body.ints(t->size);
      body.varint(t->chunks.size());
      for (const auto& c : t->chunks) {
        body.ints(c.offsets);
        body.ints(c.sizes);
      }
    } else {
      body.u8(1);
    }
  }

  // File names repeat across items: store each once and refer to it by
  // number (in the order they first appear). One walk over the items: they
  // are encoded apart, numbering the files as they come, and follow the
  // file table.
  std::unordered_map<std::string, uint64_t> file_ids;
  std::vector<const std::string*> files;
  codec::Encoder items;
  items.buffer().reserve(64 * md.storage_data.size());
  const std::string* last_file = nullptr;
  uint64_t last_id = 0;
  for (const auto& [index, info] : md.storage_data) {
    items.str(index.fqn);
    items.ints(index.offset);
    if (!last_file || *last_file != info.relative_path) {  // runs of one file are common
      last_file = &info.relative_path;
      auto it = file_ids.find(info.relative_path);
      if (it == file_ids.end()) {
        it = file_ids.emplace(info.relative_path, files.size()).first;
        files.push_back(&info.relative_path);
      }
      last_id = it->second;
    }
    items.varint(last_id);
    items.varint(info.offset);
    items.varint(info.length);
    items.u8(static_cast<uint8_t>(info.checksum_type));
    items.u64(info.checksum);
  }
  body.varint(files.size());
  for (const auto* f : files) body.str(*f);
  body.varint(md.storage_data.size());
  body.raw(items.buffer().data(), items.buffer().size());

  std::string out = body.take();
  const size_t body_len = out.size() - kHeaderSize;
  codec::Encoder header;
  header.raw(kMagic, sizeof kMagic);
  header.u32(kFormatVersion);
  header.u32(0);  // flags, reserved
  header.u64(body_len);
  header.u64(xxh3_64(out.data() + kHeaderSize, body_len));
  out.replace(0, kHeaderSize, header.buffer());
  return out;
}

namespace {

// The state_dict_metadata entries of a metadata body.
void decode_entries(codec::Decoder& d, Metadata& md) {
  const size_t n_entries = d.count("entry");
  for (size_t i = 0; i < n_entries; ++i) {
    std::string fqn = d.str();
    const uint8_t kind = d.u8();
    if (kind == 0) {
      TensorStorageMetadata t;
      try {
        t.properties.dtype = dtype_from_name(d.str_view());
      } catch (const InvalidArgumentError& e) {
        d.fail("key '" + fqn + "': " + e.what());
      }
      t.properties.requires_grad = d.u8() != 0;
      t.size = d.ints();
      const size_t n_chunks = d.count("chunk");
      t.chunks.resize(n_chunks);
      for (auto& c : t.chunks) {
        c.offsets = d.ints();
        c.sizes = d.ints();
        if (c.offsets.size() != t.size.size() || c.sizes.size() != t.size.size())
          d.fail("key '" + fqn + "': chunk rank differs from tensor rank");
      }
      // Written in key order: the hint makes each insertion O(1).
      md.state_dict_metadata.emplace_hint(md.state_dict_metadata.end(), std::move(fqn),
                                          std::move(t));
    } else if (kind == 1) {
      md.state_dict_metadata.emplace_hint(md.state_dict_metadata.end(), std::move(fqn),
                                          BytesStorageMetadata{});
    } else {
      d.fail("key '" + fqn + "': unknown entry kind " + std::to_string(kind));
    }
  }
}

}  // namespace

Metadata deserialize_metadata(std::string_view bytes, const std::string& source) {
  if (bytes.empty()) throw CorruptionError(source + ": metadata file is empty");
  if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw CorruptionError(source + ": not a dcp++ metadata file (bad magic or too short: " +
                          std::to_string(bytes.size()) + " bytes)");
  codec::Decoder header(bytes.substr(sizeof kMagic, kHeaderSize - sizeof kMagic), source);
  const uint32_t version = header.u32();
  const uint32_t flags = header.u32();
  const uint64_t body_len = header.u64();
  const uint64_t checksum = header.u64();
  if (version == 0 || version > kFormatVersion)
    throw InvalidArgumentError(source + ": metadata format version " + std::to_string(version) +
                               " is not supported; this build of dcp++ reads versions 1 to " +
                               std::to_string(kFormatVersion));
  // Reserved: 0 in every version this build reads (the body checksum does not cover it).
  if (flags != 0)
    throw CorruptionError(source + ": the reserved flags word of the metadata header is " +
                          std::to_string(flags) + ", not 0 (the file is corrupt)");
  if (bytes.size() - kHeaderSize != body_len)
    throw CorruptionError(source + ": metadata is truncated or has trailing bytes (body of " +
                          std::to_string(bytes.size() - kHeaderSize) + " bytes, header says " +
                          std::to_string(body_len) + ")");
  std::string_view b = bytes.substr(kHeaderSize);
  if (xxh3_64(b.data(), b.size()) != checksum)
    throw CorruptionError(source + ": metadata checksum mismatch (the file is corrupt)");

  codec::Decoder d(b, source);
  Metadata md;
  md.version = version;
  md.library_version = d.str();
  md.world_size = static_cast<int32_t>(d.svarint());
  if (d.u8()) {
    StorageMeta sm;
    sm.checkpoint_id = d.str();
    sm.save_id = d.str();
    md.storage_meta = std::move(sm);
  }
  md.planner_data = d.str();

  decode_entries(d, md);

  const size_t n_files = d.count("file");
  std::vector<std::string> files(n_files);
  for (auto& f : files) f = d.str();
  const size_t n_items = d.count("item");
  for (size_t i = 0; i < n_items; ++i) {
    MetadataIndex index;
    index.fqn = d.str();
    index.offset = d.ints();
    StorageInfo info;
    const uint64_t file = d.varint();
    if (file >= files.size()) d.fail("item " + to_string(index) + ": bad file number");
    info.relative_path = files[file];
    info.offset = d.varint();
    info.length = d.varint();
    info.checksum_type = static_cast<ChecksumType>(d.u8());
    info.checksum = d.u64();
    md.storage_data.emplace_hint(md.storage_data.end(), std::move(index), std::move(info));
  }
  if (!d.done()) d.fail("trailing bytes after the metadata body");
  return md;
}

}  // namespace dcp
