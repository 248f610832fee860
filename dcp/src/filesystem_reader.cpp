// The file-system storage backend's reader (and, over another Env, the
// memory one's): items grouped by saved chunk and sorted by file offset,
// small ones read in runs, large ones straight into their destination (or,
// read in part, only the rows asked for: sequential_reads.h).

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "buffer_pool.h"
#include "chunk_validation.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/thread_annotations.h"
#include "env.h"
#include "error_text.h"
#include "filesystem_common.h"
#include "sequential_reads.h"
#include "xxh3.h"

namespace dcp {

using namespace internal;

namespace {

using fs::Location;
using fs::run_parallel;

class FileSystemReader final : public StorageReader, public SequentialReads {
 public:
  FileSystemReader(Env* env, std::string scheme, std::string path, FileSystemReaderOptions opt)
      : loc_{env, std::move(scheme), std::move(path)}, opt_(opt) {
    if (opt_.threads < 1)
      throw InvalidArgumentError("FileSystemReaderOptions.threads must be >= 1");
  }

  void reset(const std::string& checkpoint_id) override {
    loc_.reset(checkpoint_id);
    MutexLock lock(progress_mu_);
    progress_.clear();
    sequential_ = false;
  }

  Metadata read_metadata() override {
    if (loc_.path.empty()) throw InvalidArgumentError("no checkpoint path was given to the reader");
    if (!loc_.env->dir_exists(loc_.path))
      throw NotFoundError("no checkpoint at '" + loc_.id() + "': the directory does not exist");
    const std::string md_path = loc_.file(kMetadataFileName);
    if (!loc_.env->file_exists(md_path))
      throw NotFoundError("'" + loc_.id() + "' is not a committed checkpoint: it has no " +
                          kMetadataFileName + " file (an interrupted or failed save?)");
    return deserialize_metadata(loc_.env->read_file(md_path), loc_.display(md_path));
  }

  void set_up_storage_reader(const Metadata& metadata, bool) override { md_ = &metadata; }
  LoadPlan prepare_local_plan(LoadPlan plan) override { return plan; }
  std::vector<LoadPlan> prepare_global_plan(std::vector<LoadPlan> plans) override { return plans; }

  std::future<void> read_data(const LoadPlan& plan, LoadPlanner& planner) override {
    return fs::run_now([&] { read_all(plan, planner); });
  }

  bool validate_checkpoint_id(const std::string& id) const override { return loc_.accepts(id); }
  std::string checkpoint_id() const override { return loc_.id(); }

  void begin_sequential_reads() override {
    MutexLock lock(progress_mu_);
    progress_.clear();
    sequential_ = true;
  }

  void finish_sequential_reads() override {
    std::map<MetadataIndex, Progress> left;
    {
      MutexLock lock(progress_mu_);
      left.swap(progress_);
      sequential_ = false;
    }
    std::map<std::string, std::unique_ptr<RandomAccessFile>> files;
    for (auto& [index, p] : left) {
      if (p.done) continue;
      auto& f = files[p.info.relative_path];
      if (!f) f = loc_.env->new_random_access_file(loc_.file(p.info.relative_path));
      verify_whole(index, p.info, *f);
    }
  }

 private:
  // One saved item and the reads that need it.
  struct Unit {
    const MetadataIndex* index;
    const StorageInfo* info;
    const TensorStorageMetadata* tensor = nullptr;  // null for bytes
    const ChunkStorageMetadata* chunk = nullptr;
    std::vector<const ReadItem*> reads;
    const RandomAccessFile* file = nullptr;
  };

  [[noreturn]] void truncated(const Unit& u) const {
    throw CorruptionError("data file '" + u.file->path() + "' is truncated: item " +
                          to_string(*u.index) + " needs bytes [" + std::to_string(u.info->offset) +
                          ", " + std::to_string(u.info->offset + u.info->length) +
                          "), the file has " + std::to_string(u.file->size()) + " bytes");
  }

  void verify(const Unit& u, const void* data) const {
    if (!opt_.verify_checksums || u.info->checksum_type == ChecksumType::kNone) return;
    if (u.info->checksum_type != ChecksumType::kXXH3_64)
      throw CorruptionError("item " + to_string(*u.index) + " in '" + u.file->path() +
                            "' has an unknown checksum type");
    if (xxh3_64(data, u.info->length) != u.info->checksum)
      throw CorruptionError("checksum mismatch for item " + to_string(*u.index) + " in '" +
                            u.file->path() + "' (bytes [" + std::to_string(u.info->offset) + ", " +
                            std::to_string(u.info->offset + u.info->length) +
                            ")): the data is corrupt");
  }

  // verify() of bytes read straight into the destination `dst`. Another
  // item with the same destination memory (tied weights, read by another
  // thread or later in the same read) may have overwritten them since: on
  // a mismatch the item is read again, privately, and checked there; only
  // when that fails too is the data corrupt. Then dst gets the good bytes.
  void verify_in_place(const Unit& u, void* dst) const {
    if (!hashed(*u.info)) return verify(u, dst);  // (an unknown checksum type is its to report)
    if (xxh3_64(dst, u.info->length) == u.info->checksum) return;
    std::unique_ptr<char[]> tmp(new char[u.info->length]);
    if (u.file->read(u.info->offset, u.info->length, tmp.get()) != u.info->length) truncated(u);
    verify(u, tmp.get());
    std::memcpy(dst, tmp.get(), u.info->length);
  }

  [[noreturn]] static void mismatch(const MetadataIndex& index, const StorageInfo& info,
                                    const std::string& file) {
    throw CorruptionError("checksum mismatch for item " + to_string(index) + " in '" + file +
                          "' (bytes [" + std::to_string(info.offset) + ", " +
                          std::to_string(info.offset + info.length) + ")): the data is corrupt");
  }

  bool hashed(const StorageInfo& info) const {
    return opt_.verify_checksums && info.checksum_type == ChecksumType::kXXH3_64;
  }

  // Reads the item whole, in pieces, and checks its checksum.
  void verify_whole(const MetadataIndex& index, const StorageInfo& info,
                    const RandomAccessFile& file) const {
    if (!opt_.verify_checksums || info.checksum_type == ChecksumType::kNone) return;
    if (info.checksum_type != ChecksumType::kXXH3_64)
      throw CorruptionError("item " + to_string(index) + " in '" + file.path() +
                            "' has an unknown checksum type");
    BufferPool::Buffer buf = BufferPool::instance().acquire(opt_.coalesce_bytes);
    Xxh3 state;
    for (uint64_t done = 0; done < info.length;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), info.length - done));
      if (file.read(info.offset + done, n, buf.data()) != n)
        throw CorruptionError("data file '" + file.path() + "' is truncated: item " +
                              to_string(index) + " needs bytes [" + std::to_string(info.offset) +
                              ", " + std::to_string(info.offset + info.length) +
                              "), the file has " + std::to_string(file.size()) + " bytes");
      state.update(buf.data(), n);
      done += n;
    }
    if (state.digest() != info.checksum) mismatch(index, info, file.path());
  }

  // An item's bytes hashed in order as reads deliver them, possibly over
  // several read_data() calls (sequential_reads.h).
  struct Progress {
    StorageInfo info;
    uint64_t next = 0;  // bytes [0, next) are hashed
    bool gap = false;   // a read skipped bytes: only a whole read can check it
    bool done = false;  // checked
    Xxh3 state;
  };

  // Bytes [begin, end) of the item, at `data`, into its hash; checks the
  // checksum when they complete it.
  static void feed(Progress& p, const MetadataIndex& index, const std::string& file, uint64_t begin,
                   uint64_t end, const char* data) {
    if (p.done || p.gap || end <= p.next) return;
    if (begin > p.next) {
      p.gap = true;
      return;
    }
    p.state.update(data + (p.next - begin), end - p.next);
    p.next = end;
    if (p.next == p.info.length) {
      p.done = true;
      if (p.state.digest() != p.info.checksum) mismatch(index, p.info, file);
    }
  }

  // Runs fn; an error from it (the planner's, ATen's) is passed on with the
  // item, its file and the read's destination in front.
  template <typename Fn>
  void in_context(const Unit& u, const ReadItem& ri, const Fn& fn) const {
    try {
      fn();
    } catch (...) {
      std::string where = "loading " + to_string(*u.index) + " from '" + u.file->path() + "'";
      if (ri.dest_index != *u.index) where += " into " + to_string(ri.dest_index);
      rethrow_with_context(where);
    }
  }

  // resolve_tensor's tensor for `ri`, which must have the read's shape
  // (copy_ would broadcast a smaller one silently).
  static at::Tensor destination(LoadPlanner& planner, const ReadItem& ri) {
    at::Tensor dst = planner.resolve_tensor(ri);
    if (!dst.defined() || dst.sizes() != at::IntArrayRef(ri.lengths))
      throw InvalidArgumentError("resolve_tensor gave " + describe(Value(dst)) +
                                 " for a read of size " + shape_str(ri.lengths));
    return dst;
  }

  // The tensor of `ri`, one of u.reads: `resolved0` when it is u.reads[0]
  // and that was resolved already (resolve and commit come in pairs: it is
  // not asked for again), otherwise destination()'s.
  static at::Tensor destination(LoadPlanner& planner, const Unit& u, const ReadItem* ri,
                                const at::Tensor& resolved0) {
    return ri == u.reads[0] && resolved0.defined() ? resolved0 : destination(planner, *ri);
  }

  // `dst` can take the saved bytes of `u` as they are.
  static bool takes_bytes(const Unit& u, const at::Tensor& dst) {
    return dst.is_contiguous() && dst.device().is_cpu() &&
           dst.scalar_type() == u.tensor->properties.dtype && dst.nbytes() == u.info->length;
  }

  // The saved bytes of `u` are at `src`: verify them and hand them over.
  // `resolved0`: as for destination() above.
  void deliver(const Unit& u, const char* src, LoadPlanner& planner, at::Tensor resolved0 = {}) {
    verify(u, src);
    if (!u.tensor) {
      Bytes b{std::string(src, u.info->length)};
      MutexLock lock(bytes_mu_);
      for (const ReadItem* ri : u.reads) in_context(u, *ri, [&] { planner.load_bytes(*ri, b); });
      return;
    }
    at::Tensor saved;  // a view of the bytes, made only when a read needs ATen
    for (const ReadItem* ri : u.reads) {
      in_context(u, *ri, [&] {
        fs::check_read_box(u.chunk->sizes, *ri);
        at::Tensor dst = destination(planner, u, ri, resolved0);
        if (covers_whole_chunk(u, *ri) && takes_bytes(u, dst)) {
          // The common case: a plain memcpy (copy_() costs microseconds of dispatch per item).
          if (u.info->length) std::memcpy(dst.data_ptr(), src, u.info->length);
          planner.commit_tensor(*ri, dst);
          return;
        }
        if (!saved.defined())
          saved = at::from_blob(const_cast<char*>(src), u.chunk->sizes,
                                at::TensorOptions().dtype(u.tensor->properties.dtype));
        at::Tensor view = saved;
        for (size_t d = 0; d < ri->lengths.size(); ++d)
          if (ri->storage_offsets[d] != 0 || ri->lengths[d] != view.size(d))
            view = view.narrow(static_cast<int64_t>(d), ri->storage_offsets[d], ri->lengths[d]);
        dst.copy_(view);
        planner.commit_tensor(*ri, dst);
      });
    }
  }

  static bool covers_whole_chunk(const Unit& u, const ReadItem& ri) {
    if (ri.lengths != u.chunk->sizes) return false;
    for (int64_t o : ri.storage_offsets)
      if (o != 0) return false;
    return true;
  }

  // A read of whole rows (dimension 0) of the saved chunk: a contiguous
  // byte range of the item.
  static bool whole_rows(const Unit& u, const ReadItem& ri) {
    const auto& sizes = u.chunk->sizes;
    if (sizes.empty() || sizes[0] == 0 || ri.lengths.size() != sizes.size() ||
        ri.storage_offsets.size() != sizes.size())
      return false;
    for (size_t d = 1; d < sizes.size(); ++d)
      if (ri.storage_offsets[d] != 0 || ri.lengths[d] != sizes[d]) return false;
    return true;
  }

  // A large item read in rows: each read takes only its rows, straight into
  // its destination when that takes the bytes as they are, otherwise
  // through a piece buffer. The checksum is computed as the rows go by when
  // they come in order; otherwise (or when they do not reach the end) the
  // item is read whole once to check it (in sequential mode: by
  // finish_sequential_reads(), unless later calls complete it).
  void read_rows(const Unit& u, LoadPlanner& planner, at::Tensor resolved0 = {}) {
    for (const ReadItem* ri : u.reads)
      in_context(u, *ri, [&] { fs::check_read_box(u.chunk->sizes, *ri); });
    std::vector<const ReadItem*> reads = u.reads;
    std::stable_sort(reads.begin(), reads.end(), [](const ReadItem* a, const ReadItem* b) {
      return a->storage_offsets[0] < b->storage_offsets[0];
    });
    const uint64_t row = u.info->length / static_cast<uint64_t>(u.chunk->sizes[0]);
    Progress local;
    Progress* p = nullptr;
    bool keep = false;  // the progress outlives this call
    if (hashed(*u.info)) {
      MutexLock lock(progress_mu_);
      keep = sequential_;
      if (keep) {
        auto [it, fresh] = progress_.try_emplace(*u.index);
        p = &it->second;
        if (fresh) {
          p->info = *u.info;
          p->state = Xxh3();
        }
      } else {
        p = &local;
        p->info = *u.info;
        p->state = Xxh3();
      }
    }
    const std::string& file = u.file->path();
    BufferPool::Buffer buf;
    for (const ReadItem* ri : reads) {
      const uint64_t first = static_cast<uint64_t>(ri->storage_offsets[0]);
      const uint64_t rows = static_cast<uint64_t>(ri->lengths[0]);
      at::Tensor dst;
      in_context(u, *ri, [&] { dst = destination(planner, u, ri, resolved0); });
      const bool direct = dst.is_contiguous() && dst.device().is_cpu() &&
                          dst.scalar_type() == u.tensor->properties.dtype &&
                          dst.nbytes() == rows * row;
      if (direct) {
        char* out = static_cast<char*>(dst.data_ptr());
        if (rows && u.file->read(u.info->offset + first * row, rows * row, out) != rows * row)
          truncated(u);
        if (p)
          in_context(u, *ri,
                     [&] { feed(*p, *u.index, file, first * row, (first + rows) * row, out); });
      } else {
        const uint64_t per =
            std::max<uint64_t>(1, opt_.coalesce_bytes / std::max<uint64_t>(row, 1));
        if (!buf)
          buf = BufferPool::instance().acquire(std::max<uint64_t>(opt_.coalesce_bytes, row));
        std::vector<int64_t> shape = u.chunk->sizes;
        for (uint64_t r = 0; r < rows; r += per) {
          const uint64_t k = std::min(per, rows - r);
          const uint64_t at = (first + r) * row;
          if (u.file->read(u.info->offset + at, k * row, buf.data()) != k * row) truncated(u);
          in_context(u, *ri, [&] {
            if (p) feed(*p, *u.index, file, at, at + k * row, buf.data());
            shape[0] = static_cast<int64_t>(k);
            at::Tensor src = at::from_blob(buf.data(), shape,
                                           at::TensorOptions().dtype(u.tensor->properties.dtype));
            dst.narrow(0, static_cast<int64_t>(r), static_cast<int64_t>(k)).copy_(src);
          });
        }
      }
      in_context(u, *ri, [&] { planner.commit_tensor(*ri, dst); });
    }
    if (p && !p->done && !keep) verify_whole(*u.index, *u.info, *u.file);
  }

  // A large item: straight into the destination when it is exactly the saved
  // chunk in contiguous CPU memory; rows of it by read_rows(); otherwise
  // through a temporary buffer.
  void read_large(const Unit& u, LoadPlanner& planner) {
    at::Tensor first;  // resolved for u.reads[0], handed on when not read into directly
    if (u.tensor && u.reads.size() == 1 && covers_whole_chunk(u, *u.reads[0])) {
      const ReadItem& ri = *u.reads[0];
      in_context(u, ri, [&] { first = destination(planner, ri); });
      if (takes_bytes(u, first)) {
        if (u.file->read(u.info->offset, u.info->length, first.data_ptr()) != u.info->length)
          truncated(u);
        verify_in_place(u, first.data_ptr());
        in_context(u, ri, [&] { planner.commit_tensor(ri, first); });
        return;
      }
    }
    if (u.tensor && std::all_of(u.reads.begin(), u.reads.end(),
                                [&](const ReadItem* ri) { return whole_rows(u, *ri); }))
      return read_rows(u, planner, first);
    std::unique_ptr<char[]> tmp(new char[std::max<uint64_t>(u.info->length, 1)]);
    if (u.file->read(u.info->offset, u.info->length, tmp.get()) != u.info->length) truncated(u);
    deliver(u, tmp.get(), planner, first);
  }

  // Lookups in the metadata's maps for indexes that come in key order:
  // each starts from the previous one's place, so a run of neighbouring
  // items costs a step each, not a search (a cache miss per tree level).
  struct Cursor {
    std::map<MetadataIndex, StorageInfo>::const_iterator info;
    std::map<std::string, StorageMetadata>::const_iterator entry;
    const RandomAccessFile* file = nullptr;  // the last item's file
    const std::string* file_name = nullptr;  // its relative path (in the metadata)
  };
  template <typename Map, typename Key>
  static typename Map::const_iterator find_near(const Map& map, typename Map::const_iterator& hint,
                                                const Key& key) {
    for (int step = 0; step < 2 && hint != map.end(); ++step, ++hint) {
      if (key < hint->first) break;
      if (!(hint->first < key)) return hint;
    }
    hint = map.find(key);
    return hint;
  }

  // Where the saved item `index` (read by u.reads) is: its storage, its
  // chunk, its data file (opened once, in `files`).
  void locate(const MetadataIndex& index, Unit& u, Cursor& at,
              std::map<std::string, std::unique_ptr<RandomAccessFile>>& files) const {
    auto info = find_near(md_->storage_data, at.info, index);
    if (info == md_->storage_data.end())
      throw CorruptionError("the metadata of '" + loc_.id() +
                            "' has no storage location for item " + to_string(index));
    u.index = &info->first;
    u.info = &info->second;
    auto file = [&] { return loc_.display(loc_.file(u.info->relative_path)); };
    auto entry = find_near(md_->state_dict_metadata, at.entry, index.fqn);
    if (entry == md_->state_dict_metadata.end())
      throw CorruptionError("the metadata of '" + loc_.id() + "' has no entry for key '" +
                            index.fqn + "' (item in '" + file() + "')");
    if (auto* t = std::get_if<TensorStorageMetadata>(&entry->second)) {
      u.tensor = t;
      for (const auto& c : t->chunks)
        if (c.offsets == index.offset) u.chunk = &c;
      if (!u.chunk)
        throw CorruptionError("the metadata of '" + loc_.id() + "' has no chunk for item " +
                              to_string(index) + " (in '" + file() + "')");
      const int64_t numel = checked_volume(u.chunk->sizes);
      const uint64_t expect =
          numel < 0 ? 0 : static_cast<uint64_t>(numel) * c10::elementSize(t->properties.dtype);
      if (numel < 0 || expect != u.info->length)
        throw CorruptionError("item " + to_string(index) + " in '" + file() + "' has " +
                              std::to_string(u.info->length) + " bytes, its chunk of size " +
                              shape_str(u.chunk->sizes) + " needs " + std::to_string(expect));
    }
    for (const ReadItem* ri : u.reads)
      if ((ri->type == LoadItemType::kByteIO) != (u.tensor == nullptr))
        throw InvalidArgumentError("the plan reads item " + to_string(index) + " in '" + file() +
                                   "' as " + (u.tensor ? "a plain value" : "a tensor") + " into " +
                                   to_string(ri->dest_index));
    if (at.file && *at.file_name == u.info->relative_path) {
      u.file = at.file;
      return;
    }
    auto& f = files[u.info->relative_path];
    if (!f) {
      try {
        f = loc_.env->new_random_access_file(loc_.file(u.info->relative_path));
      } catch (const NotFoundError& e) {
        throw CorruptionError("checkpoint '" + loc_.id() + "' is missing data file '" +
                              u.info->relative_path + "' (needed for item " + to_string(index) +
                              "): " + e.what());
      }
    }
    u.file = f.get();
    at.file = u.file;
    at.file_name = &u.info->relative_path;
  }

  void read_all(const LoadPlan& plan, LoadPlanner& planner) {
    // The reads grouped by saved item, in key order (a plan usually lists
    // them so already).
    std::vector<const ReadItem*> order;
    order.reserve(plan.items.size());
    for (const ReadItem& ri : plan.items) order.push_back(&ri);
    auto by_storage = [](const ReadItem* a, const ReadItem* b) {
      return a->storage_index < b->storage_index;
    };
    if (!std::is_sorted(order.begin(), order.end(), by_storage))
      std::stable_sort(order.begin(), order.end(), by_storage);
    std::vector<Unit> all;
    for (const ReadItem* ri : order) {
      if (all.empty() || all.back().reads.front()->storage_index != ri->storage_index)
        all.emplace_back();
      all.back().reads.push_back(ri);
    }
    std::map<std::string, std::unique_ptr<RandomAccessFile>> files;
    std::vector<Unit*> units;
    units.reserve(all.size());
    Cursor at{md_->storage_data.begin(), md_->state_dict_metadata.begin()};
    for (Unit& u : all) {
      locate(u.reads.front()->storage_index, u, at, files);
      units.push_back(&u);
    }
    std::sort(units.begin(), units.end(), [](const Unit* a, const Unit* b) {
      return a->file != b->file ? a->info->relative_path < b->info->relative_path
                                : a->info->offset < b->info->offset;
    });

    // Tasks: a run of neighbouring small items of one file (one read), or
    // one large item.
    const uint64_t small = std::min<uint64_t>(opt_.coalesce_bytes / 2, uint64_t{1} << 20);
    std::vector<std::pair<size_t, size_t>> tasks;  // [begin, end) in units
    for (size_t i = 0; i < units.size();) {
      size_t j = i + 1;
      if (units[i]->info->length < small) {
        const uint64_t start = units[i]->info->offset;
        while (j < units.size() && units[j]->file == units[i]->file &&
               units[j]->info->length < small &&
               units[j]->info->offset >= units[j - 1]->info->offset + units[j - 1]->info->length &&
               units[j]->info->offset - (units[j - 1]->info->offset + units[j - 1]->info->length) <=
                   4096 &&
               units[j]->info->offset + units[j]->info->length - start <= opt_.coalesce_bytes)
          ++j;
      }
      tasks.emplace_back(i, j);
      i = j;
    }

    run_parallel(opt_.threads, tasks.size(), [&](size_t ti) {
      auto [b, e] = tasks[ti];
      const Unit& first = *units[b];
      if (e - b == 1 && first.info->length >= small) return read_large(first, planner);
      const uint64_t start = first.info->offset;
      const uint64_t span = units[e - 1]->info->offset + units[e - 1]->info->length - start;
      BufferPool::Buffer buf = BufferPool::instance().acquire(opt_.coalesce_bytes);
      // One vectored read of the run: each item whose destination takes its
      // bytes as they are goes straight there (no copy through the buffer),
      // the rest (and the padding between items) into the buffer, each at
      // its place in the run.
      // (A tensor resolved here that cannot take the bytes goes to deliver(),
      // which commits it: resolve and commit stay pairs.)
      std::vector<at::Tensor> direct(e - b), resolved(e - b);
      std::vector<ReadSlice> slices;
      uint64_t pos = start;  // bytes before it have a slice
      for (size_t i = b; i < e; ++i) {
        const Unit& u = *units[i];
        if (!u.tensor || u.reads.size() != 1 || !covers_whole_chunk(u, *u.reads[0]) ||
            u.info->length == 0)
          continue;
        const ReadItem& ri = *u.reads[0];
        at::Tensor dst;
        in_context(u, ri, [&] {
          fs::check_read_box(u.chunk->sizes, ri);
          dst = destination(planner, ri);
        });
        if (!takes_bytes(u, dst)) {
          resolved[i - b] = std::move(dst);
          continue;
        }
        if (u.info->offset > pos)
          slices.push_back({buf.data() + (pos - start), u.info->offset - pos});
        slices.push_back({dst.data_ptr(), u.info->length});
        pos = u.info->offset + u.info->length;
        direct[i - b] = std::move(dst);
      }
      if (start + span > pos) slices.push_back({buf.data() + (pos - start), start + span - pos});
      const size_t got = first.file->read_vectored(start, slices.data(), slices.size());
      for (size_t i = b; i < e; ++i) {
        const Unit& u = *units[i];
        if (u.info->offset + u.info->length > start + got) truncated(u);
        at::Tensor& dst = direct[i - b];
        if (!dst.defined()) {
          deliver(u, buf.data() + (u.info->offset - start), planner, std::move(resolved[i - b]));
          continue;
        }
        verify_in_place(u, dst.data_ptr());
        in_context(u, *u.reads[0], [&] { planner.commit_tensor(*u.reads[0], dst); });
      }
    });
  }

  Location loc_;
  const FileSystemReaderOptions opt_;
  const Metadata* md_ = nullptr;  // set_up_storage_reader's; outlives read_data
  Mutex bytes_mu_;                // serializes planner.load_bytes
  Mutex progress_mu_;
  bool sequential_ DCP_GUARDED_BY(progress_mu_) = false;
  std::map<MetadataIndex, Progress> progress_ DCP_GUARDED_BY(progress_mu_);  // sequential mode
};

}  // namespace

std::shared_ptr<StorageReader> fs::new_native_reader(Env* env, std::string scheme, std::string path,
                                                     FileSystemReaderOptions options) {
  return std::make_shared<FileSystemReader>(env, std::move(scheme), std::move(path), options);
}

}  // namespace dcp
