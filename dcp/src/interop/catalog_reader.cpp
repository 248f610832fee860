// The StorageReader over a catalog (interop/catalog.h): checkpoints of other
// formats read through dcp++'s load path. A read that takes a whole
// contiguous chunk into a contiguous destination of its dtype is one pread
// straight into the destination; any other (a strided stored tensor, a
// resharded box, a dtype conversion) goes through a fixed-size buffer, piece
// by piece, so memory stays bounded by the destination plus that buffer.

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "buffer_pool.h"
#include "chunk_validation.h"
#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/thread_annotations.h"
#include "error_text.h"
#include "filesystem_common.h"
#include "interop/catalog.h"
#include "interop/pytorch_dcp_writer.h"
#include "interop/torch_save.h"
#include "interop/zip.h"
#include "sequential_reads.h"
#include "xxh3.h"

namespace dcp {
namespace internal {

namespace {

constexpr size_t kPieceBytes = size_t{8} << 20;

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> s(sizes.size(), 1);
  for (size_t d = sizes.size(); d-- > 1;) s[d - 1] = s[d] * std::max<int64_t>(sizes[d], 1);
  return s;
}

bool is_contiguous(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  const std::vector<int64_t> c = contiguous_strides(sizes);
  for (size_t d = 0; d < sizes.size(); ++d)
    if (sizes[d] > 1 && strides[d] != c[d]) return false;
  return true;
}

class CatalogReader final : public StorageReader, public SequentialReads {
 public:
  CatalogReader(Env* env, std::string scheme, std::string path, CatalogBuilder build,
                FileSystemReaderOptions opt)
      : loc_{env, std::move(scheme), std::move(path)}, build_(std::move(build)), opt_(opt) {
    if (opt_.threads < 1)
      throw InvalidArgumentError("FileSystemReaderOptions.threads must be >= 1");
  }

  void reset(const std::string& checkpoint_id) override {
    loc_.reset(checkpoint_id);
    catalog_.reset();
    finish_sequential_reads();
  }

  // Sequential mode (sequential_reads.h): files stay open and each record's
  // CRC-32 is checked once, across read_data() calls.
  void begin_sequential_reads() override { sequential_ = true; }
  void finish_sequential_reads() override {
    sequential_ = false;
    MutexLock lock(files_mu_);
    files_.clear();
    MutexLock lock2(verified_mu_);
    verified_.clear();
  }

  Metadata read_metadata() override { return catalog().metadata; }

  void set_up_storage_reader(const Metadata& metadata, bool) override {
    catalog();
    md_ = &metadata;
  }
  LoadPlan prepare_local_plan(LoadPlan plan) override { return plan; }
  std::vector<LoadPlan> prepare_global_plan(std::vector<LoadPlan> plans) override { return plans; }

  std::future<void> read_data(const LoadPlan& plan, LoadPlanner& planner) override {
    return fs::run_now([&] { read_all(plan, planner); });
  }

  bool validate_checkpoint_id(const std::string& id) const override { return loc_.accepts(id); }
  std::string checkpoint_id() const override { return loc_.id(); }

  std::map<std::string, std::string> unreadable_keys() const override {
    std::map<std::string, std::string> out;
    if (!catalog_) return out;
    for (const auto& [index, source] : catalog_->sources)
      if (auto* u = std::get_if<UnreadableValue>(&source))
        if (!u->corrupt) out.emplace(index.fqn, u->why);
    return out;
  }

 private:
  const Catalog& catalog() {
    if (!catalog_) {
      if (loc_.path.empty())
        throw InvalidArgumentError("no checkpoint path was given to the reader");
      Catalog c = build_(*loc_.env, loc_.path, loc_.id());
      c.metadata.library_version = c.format;  // what `ckpt show` prints as the format
      catalog_ = std::make_shared<const Catalog>(std::move(c));
    }
    return *catalog_;
  }

  struct Unit {
    const MetadataIndex* index = nullptr;
    const ItemSource* source = nullptr;
    const TensorStorageMetadata* tensor = nullptr;
    const ChunkStorageMetadata* chunk = nullptr;
    std::vector<const ReadItem*> reads;
  };

  // Runs fn; an error from it is passed on with the item in front.
  template <typename Fn>
  void in_context(const Unit& u, const ReadItem* ri, const Fn& fn) const {
    try {
      fn();
    } catch (...) {
      std::string where = "loading " + to_string(*u.index) + " from '" + loc_.id() + "'";
      if (ri && ri->dest_index != *u.index) where += " into " + to_string(ri->dest_index);
      rethrow_with_context(where);
    }
  }

  const RandomAccessFile& file(const std::string& path) const {
    MutexLock lock(files_mu_);
    auto& f = files_[path];
    if (!f) f = loc_.env->new_random_access_file(path);
    return *f;
  }

  // Reads [offset, offset + n) of `f` into dst, all of it, or says what is missing.
  static void read_exact(const RandomAccessFile& f, uint64_t offset, size_t n, void* dst,
                         const std::string& what) {
    if (f.read(offset, n, dst) != n)
      throw CorruptionError(what + ": bytes [" + std::to_string(offset) + ", " +
                            std::to_string(offset + n) + ") run past the end of '" + f.path() +
                            "' (" + std::to_string(f.size()) + " bytes)");
  }

  // The checksum of the record behind `raw` (its XXH3-64 when dcp++ kept
  // one, else its CRC-32), checked once per record and load.
  void verify_record(const RawTensor& raw, const RandomAccessFile& f) {
    if (!opt_.verify_checksums || (!raw.crc && !raw.xxh3)) return;
    {
      MutexLock lock(verified_mu_);
      if (verified_.count(record_key(raw))) return;
    }
    BufferPool::Buffer buf = BufferPool::instance().acquire(kPieceBytes);
    uint32_t crc = 0;
    Xxh3 state;
    for (uint64_t done = 0; done < raw.crc_length;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kPieceBytes, raw.crc_length - done));
      read_exact(f, raw.crc_begin + done, n, buf.data(), raw.what);
      if (raw.xxh3)
        state.update(buf.data(), n);
      else
        crc = crc32(crc, buf.data(), n);
      done += n;
    }
    if (raw.xxh3)
      check_xxh3(raw, state.digest());
    else
      check_crc(raw, crc);
  }

  void check_xxh3(const RawTensor& raw, uint64_t h) {
    if (h != *raw.xxh3) {
      char msg[96];
      std::snprintf(msg, sizeof msg, "stored 0x%016llx, computed 0x%016llx",
                    static_cast<unsigned long long>(*raw.xxh3), static_cast<unsigned long long>(h));
      throw CorruptionError(raw.what + ": XXH3-64 checksum mismatch of bytes [" +
                            std::to_string(raw.crc_begin) + ", " +
                            std::to_string(raw.crc_begin + raw.crc_length) + ") (" + msg +
                            "; the checksum from " + kSidecarName + "): the data is corrupt");
    }
    MutexLock lock(verified_mu_);
    verified_.insert(record_key(raw));
  }

  void check_crc(const RawTensor& raw, uint32_t crc) {
    if (crc != *raw.crc) {
      char msg[64];
      std::snprintf(msg, sizeof msg, "stored 0x%08x, computed 0x%08x", *raw.crc, crc);
      throw CorruptionError(
          raw.what + ": CRC-32 mismatch of bytes [" + std::to_string(raw.crc_begin) + ", " +
          std::to_string(raw.crc_begin + raw.crc_length) + ") (" + msg + "): the data is corrupt");
    }
    MutexLock lock(verified_mu_);
    verified_.insert(record_key(raw));
  }

  using RecordKey = std::tuple<std::string, const void*, uint64_t>;
  static RecordKey record_key(const RawTensor& raw) {
    return RecordKey{raw.file, raw.held.get(), raw.crc_begin};
  }

  // The box `lengths` at `offsets` of the stored tensor, into `dst` (of
  // that shape), through the piece buffer: split along its first dimension
  // longer than 1 until a piece's span of storage fits.
  void copy_box(const RawTensor& raw, const RandomAccessFile& f,
                const std::vector<int64_t>& strides, std::vector<int64_t> offsets,
                std::vector<int64_t> lengths, at::Tensor dst, char* buf) const {
    const int64_t es = static_cast<int64_t>(c10::elementSize(raw.dtype));
    int64_t first = raw.storage_offset, last = raw.storage_offset;
    for (size_t d = 0; d < lengths.size(); ++d) {
      if (lengths[d] == 0) return;
      first += offsets[d] * strides[d];
      last += (offsets[d] + lengths[d] - 1) * strides[d];
    }
    const uint64_t span = static_cast<uint64_t>(last - first + 1) * static_cast<uint64_t>(es);
    if (static_cast<uint64_t>(last + 1) * static_cast<uint64_t>(es) > raw.storage_bytes)
      throw CorruptionError(raw.what + ": the tensor reaches past its storage");
    if (span > kPieceBytes) {
      for (size_t d = 0; d < lengths.size(); ++d) {
        if (lengths[d] <= 1) continue;
        const int64_t h = lengths[d] / 2;
        std::vector<int64_t> o2 = offsets, l2 = lengths;
        l2[d] = h;
        copy_box(raw, f, strides, offsets, l2, dst.narrow(static_cast<int64_t>(d), 0, h), buf);
        o2[d] += h;
        l2[d] = lengths[d] - h;
        copy_box(raw, f, strides, o2, l2, dst.narrow(static_cast<int64_t>(d), h, l2[d]), buf);
        return;
      }
    }
    read_exact(f, raw.offset + static_cast<uint64_t>(first * es), static_cast<size_t>(span), buf,
               raw.what);
    at::Tensor view = at::from_blob(buf, lengths, strides, at::TensorOptions().dtype(raw.dtype));
    dst.copy_(view);
  }

  void read_raw(const Unit& u, const RawTensor& raw, LoadPlanner& planner) {
    const RandomAccessFile& f = raw.held ? *raw.held : file(raw.file);
    const std::vector<int64_t> strides =
        raw.strides.empty() ? contiguous_strides(raw.sizes) : raw.strides;
    if (raw.sizes != u.chunk->sizes || raw.dtype != u.tensor->properties.dtype)
      throw CorruptionError(raw.what + ": holds " + dtype_name(raw.dtype) + shape_str(raw.sizes) +
                            ", the metadata says " + dtype_name(u.tensor->properties.dtype) +
                            shape_str(u.chunk->sizes));
    const bool contiguous = is_contiguous(raw.sizes, strides);
    const uint64_t es = c10::elementSize(raw.dtype);
    const uint64_t base = raw.offset + static_cast<uint64_t>(raw.storage_offset) * es;
    bool record_checked = false;
    for (const ReadItem* ri : u.reads) {
      in_context(u, ri, [&] {
        fs::check_read_box(u.chunk->sizes, *ri);
        at::Tensor dst = planner.resolve_tensor(*ri);
        if (!dst.defined() || dst.sizes() != at::IntArrayRef(ri->lengths))
          throw InvalidArgumentError("resolve_tensor gave " + describe(Value(dst)) +
                                     " for a read of size " + shape_str(ri->lengths));
        const bool whole = ri->lengths == raw.sizes &&
                           std::all_of(ri->storage_offsets.begin(), ri->storage_offsets.end(),
                                       [](int64_t o) { return o == 0; });
        const uint64_t nbytes = static_cast<uint64_t>(dst.numel()) * es;
        // Whole rows (dimension 0) of a contiguous stored tensor: one range of bytes.
        bool rows = contiguous && !raw.sizes.empty() && !whole;
        for (size_t d = 1; rows && d < raw.sizes.size(); ++d)
          rows = ri->storage_offsets[d] == 0 && ri->lengths[d] == raw.sizes[d];
        if (rows && dst.is_contiguous() && dst.device().is_cpu() &&
            dst.scalar_type() == raw.dtype) {
          const uint64_t row = static_cast<uint64_t>(checked_volume(raw.sizes)) /
                               static_cast<uint64_t>(std::max<int64_t>(raw.sizes[0], 1)) * es;
          const uint64_t at = base + static_cast<uint64_t>(ri->storage_offsets[0]) * row;
          if (nbytes) {
            if (at + nbytes > raw.offset + raw.storage_bytes)
              throw CorruptionError(raw.what + ": the tensor reaches past its storage");
            read_exact(f, at, static_cast<size_t>(nbytes), dst.data_ptr(), raw.what);
          }
        } else if (whole && contiguous && dst.is_contiguous() && dst.device().is_cpu() &&
                   dst.scalar_type() == raw.dtype) {
          if (nbytes) {
            if (base + nbytes > raw.offset + raw.storage_bytes)
              throw CorruptionError(raw.what + ": the tensor reaches past its storage");
            read_exact(f, base, static_cast<size_t>(nbytes), dst.data_ptr(), raw.what);
            if (opt_.verify_checksums && (raw.crc || raw.xxh3) && base == raw.crc_begin &&
                nbytes == raw.crc_length && !record_checked) {
              if (raw.xxh3)
                check_xxh3(raw, xxh3_64(dst.data_ptr(), static_cast<size_t>(nbytes)));
              else
                check_crc(raw, crc32(0, dst.data_ptr(), static_cast<size_t>(nbytes)));
              record_checked = true;
            }
          }
        } else {
          BufferPool::Buffer buf = BufferPool::instance().acquire(kPieceBytes);
          at::NoGradGuard no_grad;
          copy_box(raw, f, strides, ri->storage_offsets, ri->lengths, dst, buf.data());
        }
        planner.commit_tensor(*ri, dst);
      });
    }
    if (!record_checked) in_context(u, nullptr, [&] { verify_record(raw, f); });
  }

  // A DCP tensor item: its torch.save archive, opened now.
  RawTensor resolve(const Unit& u, const ArchiveTensor& a) {
    const RandomAccessFile& f = file(a.file);
    const std::string what = "item " + to_string(*u.index) + " ('" + a.file + "' bytes [" +
                             std::to_string(a.offset) + ", " + std::to_string(a.offset + a.length) +
                             "))";
    std::shared_ptr<RandomAccessFile> held;
    const RandomAccessFile* src = &f;
    uint64_t at = a.offset, len = a.length;
    if (!a.transforms.empty()) {
      std::string bytes(a.length, '\0');
      read_exact(f, a.offset, a.length, bytes.data(), what);
      const int64_t numel = checked_volume(u.chunk->sizes);
      const uint64_t expect = static_cast<uint64_t>(std::max<int64_t>(numel, 0)) *
                                  c10::elementSize(u.tensor->properties.dtype) +
                              (uint64_t{1} << 20);
      held = memory_file(undo_transforms(std::move(bytes), a.transforms, expect, what), a.file);
      src = held.get();
      at = 0;
      len = held->size();
    }
    TorchArchive archive = open_torch_archive(*src, at, len, what, true);
    const py::Object& root = archive.pickle.root();
    std::vector<TorchLeaf> leaves = torch_leaves(root, {}, what);
    if (leaves.size() != 1 || !std::holds_alternative<StoredTensor>(leaves[0].value))
      throw CorruptionError(what + ": holds " + py::describe(root) + ", not a tensor");
    RawTensor raw = raw_tensor(archive, std::get<StoredTensor>(leaves[0].value), a.file, what);
    raw.held = held;
    raw.xxh3 = a.xxh3;
    return raw;
  }

  void read_unit(const Unit& u, LoadPlanner& planner) {
    if (auto* v = std::get_if<InlineValue>(u.source)) {
      const Bytes b = v->raw ? v->value.to_bytes() : encode_plain_value(v->value);
      MutexLock lock(bytes_mu_);
      for (const ReadItem* ri : u.reads) in_context(u, ri, [&] { planner.load_bytes(*ri, b); });
      return;
    }
    if (auto* bad = std::get_if<UnreadableValue>(u.source)) {
      in_context(u, u.reads.front(), [&] {
        if (bad->corrupt) throw CorruptionError(bad->why);
        throw InvalidArgumentError(bad->why +
                                   " (LoadOptions::skip_unreadable_values skips such keys)");
      });
    }
    if (!u.tensor)
      in_context(u, u.reads.front(),
                 [&] { throw InvalidArgumentError("the plan reads a plain value as a tensor"); });
    if (auto* raw = std::get_if<RawTensor>(u.source)) return read_raw(u, *raw, planner);
    RawTensor raw;
    in_context(u, nullptr, [&] { raw = resolve(u, std::get<ArchiveTensor>(*u.source)); });
    read_raw(u, raw, planner);
  }

  void read_all(const LoadPlan& plan, LoadPlanner& planner) {
    const Catalog& cat = catalog();
    const Metadata& md = md_ ? *md_ : cat.metadata;
    std::map<MetadataIndex, Unit> by_index;
    for (const ReadItem& ri : plan.items) by_index[ri.storage_index].reads.push_back(&ri);
    std::vector<Unit*> units;
    for (auto& [index, u] : by_index) {
      auto src = cat.sources.find(index);
      if (src == cat.sources.end())
        throw CorruptionError("'" + loc_.id() + "' has no item " + to_string(index));
      u.index = &src->first;
      u.source = &src->second;
      auto entry = md.state_dict_metadata.find(index.fqn);
      if (entry == md.state_dict_metadata.end())
        throw CorruptionError("'" + loc_.id() + "' has no entry for key '" + index.fqn + "'");
      if (auto* t = std::get_if<TensorStorageMetadata>(&entry->second)) {
        u.tensor = t;
        for (const auto& c : t->chunks)
          if (c.offsets == index.offset) u.chunk = &c;
        if (!u.chunk)
          throw CorruptionError("'" + loc_.id() + "' has no chunk for item " + to_string(index));
      }
      for (const ReadItem* ri : u.reads)
        if ((ri->type == LoadItemType::kByteIO) != (u.tensor == nullptr))
          throw InvalidArgumentError(
              "the plan reads item " + to_string(index) + " of '" + loc_.id() + "' as " +
              (u.tensor ? "a plain value" : "a tensor") + " into " + to_string(ri->dest_index));
      units.push_back(&u);
    }
    fs::run_parallel(opt_.threads, units.size(), [&](size_t i) { read_unit(*units[i], planner); });
    if (sequential_) return;
    MutexLock lock(files_mu_);
    files_.clear();
    MutexLock lock2(verified_mu_);
    verified_.clear();
  }

  fs::Location loc_;
  CatalogBuilder build_;
  const FileSystemReaderOptions opt_;
  std::shared_ptr<const Catalog> catalog_;
  const Metadata* md_ = nullptr;
  mutable Mutex files_mu_;
  mutable std::map<std::string, std::unique_ptr<RandomAccessFile>> files_ DCP_GUARDED_BY(files_mu_);
  Mutex verified_mu_;
  std::set<RecordKey> verified_
      DCP_GUARDED_BY(verified_mu_);  // records whose CRC-32 was checked in this read_data
  Mutex bytes_mu_;                   // one planner.load_bytes at a time
  std::atomic<bool> sequential_{false};
};

}  // namespace

std::shared_ptr<StorageReader> new_catalog_reader(Env* env, std::string scheme, std::string path,
                                                  CatalogBuilder build,
                                                  FileSystemReaderOptions options) {
  return std::make_shared<CatalogReader>(env, std::move(scheme), std::move(path), std::move(build),
                                         options);
}

}  // namespace internal
}  // namespace dcp
