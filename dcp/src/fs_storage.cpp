// The file-system storage backend (and, over another Env, the memory one).
//
// Commit protocol of a save (writer side):
//   1. set_up (coordinator): create the directory; if it holds a committed
//      checkpoint, refuse (AlreadyExistsError) unless overwrite is on, in
//      which case remove .metadata first and fsync the directory, so the old
//      metadata never describes new data. Stale data files are removed.
//   2. write_data (every rank): each worker thread writes its own data file
//      __<rank>_<n>.distcp from tensor memory, then fdatasyncs and closes it.
//   3. finish (coordinator): serialize the metadata, write .metadata.tmp,
//      fdatasync it, rename it to .metadata, fsync the directory.
// The rename in step 3 is the commit point: before it the directory is not a
// checkpoint (no reader accepts it); after it every byte it names is durable.
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>

#include "buffer_pool.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/memory_storage.h"
#include "env.h"

namespace dcp {

using namespace internal;

namespace {

constexpr size_t kAlign = 64;                    // every item starts at a multiple of this
constexpr size_t kPieceBytes = size_t{4} << 20;  // hash-then-write granularity of large items
constexpr uint64_t kWritebackBytes = uint64_t{64} << 20;
constexpr char kDataSuffix[] = ".distcp";
constexpr char kTmpMetadataName[] = ".metadata.tmp";

std::string random_id() {
  std::random_device rd;
  uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Runs fn(i) for i in [0, n) on `threads` threads; every task runs even when
// some fail, and the first failure is rethrown after all have finished.
template <typename Fn>
void run_parallel(int threads, size_t n, const Fn& fn) {
  std::vector<std::exception_ptr> errors(n);
  auto body = [&](size_t i) {
    at::NoGradGuard no_grad;
    try {
      fn(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  if (threads <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) body(i);
  } else {
    tbb::task_arena arena(threads);
    arena.execute([&] {
      tbb::parallel_for(
          tbb::blocked_range<size_t>(0, n, 1),
          [&](const tbb::blocked_range<size_t>& r) {
            for (size_t i = r.begin(); i != r.end(); ++i) body(i);
          },
          tbb::simple_partitioner());
    });
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Where a checkpoint lives: an Env, the id's scheme ("" for POSIX paths,
// "memory://" for the memory store) and the path inside the Env.
struct Location {
  Env* env;
  std::string scheme;
  std::string path;

  void reset(const std::string& id) {
    if (id.empty()) return;
    path = !scheme.empty() && id.compare(0, scheme.size(), scheme) == 0 ? id.substr(scheme.size())
                                                                        : id;
  }
  bool accepts(const std::string& id) const {
    return scheme.empty() ? id.find("://") == std::string::npos
                          : id.compare(0, scheme.size(), scheme) == 0;
  }
  // The checkpoint id, as users spell it (for messages and metadata).
  std::string display(const std::string& p) const { return scheme + p; }
  std::string id() const { return display(path); }
  std::string file(const std::string& name) const { return join_path(path, name); }
};

// ---------------------------------------------------------------------------
// Writer

// Writes a sequence of items into one file: small items through a reused
// buffer, large ones straight from their memory in pieces that are hashed
// just before they are written.
class FileAppender {
 public:
  FileAppender(std::unique_ptr<WritableFile> file, const FileSystemWriterOptions& opt,
               bool need_buffer)
      : file_(std::move(file)), opt_(opt) {
    if (need_buffer) buf_ = BufferPool::instance().acquire(opt.buffer_bytes);
  }

  // Appends one item; returns its offset and checksum.
  std::pair<uint64_t, uint64_t> add(const void* data, size_t n) {
    static const char zeros[kAlign] = {};
    const size_t pad = static_cast<size_t>(-offset_ & (kAlign - 1));
    if (pad) emit(zeros, pad, true);
    const uint64_t start = offset_;
    uint64_t checksum = 0;
    if (n < opt_.coalesce_below_bytes && buf_) {
      if (opt_.checksums) checksum = XXH3_64bits(data, n);
      emit(data, n, true);
    } else {
      flush();
      if (opt_.checksums) {
        XXH3_state_t state;
        XXH3_64bits_reset(&state);
        const char* p = static_cast<const char*>(data);
        for (size_t done = 0; done < n; done += kPieceBytes) {
          const size_t len = std::min(kPieceBytes, n - done);
          XXH3_64bits_update(&state, p + done, len);
          append_direct(p + done, len);
        }
        checksum = n ? XXH3_64bits_digest(&state) : XXH3_64bits(data, 0);
      } else {
        append_direct(data, n);
      }
    }
    return {start, checksum};
  }

  void finish() {
    flush();
    if (opt_.sync_files) file_->sync();
    file_->close();
  }

 private:
  void emit(const void* data, size_t n, bool buffered) {
    if (buffered && buf_ && n <= buf_.size()) {
      if (used_ + n > buf_.size()) flush();
      std::memcpy(buf_.data() + used_, data, n);
      used_ += n;
      offset_ += n;
    } else {
      flush();
      append_direct(data, n);
    }
  }
  void append_direct(const void* data, size_t n) {
    file_->append(data, n);
    offset_ += n;
    written_since_hint_ += n;
    if (opt_.sync_files && written_since_hint_ >= kWritebackBytes) {
      file_->start_writeback();
      written_since_hint_ = 0;
    }
  }
  void flush() {
    if (used_ == 0) return;
    const size_t n = used_;
    used_ = 0;
    offset_ -= n;  // append_direct counts them again
    append_direct(buf_.data(), n);
  }

  std::unique_ptr<WritableFile> file_;
  const FileSystemWriterOptions& opt_;
  BufferPool::Buffer buf_;
  size_t used_ = 0;
  uint64_t offset_ = 0;
  uint64_t written_since_hint_ = 0;
};

// Never commit a checkpoint with an item that was not written: every chunk
// of every entry has storage. One walk over both maps, both in key order.
void check_all_written(const Metadata& md) {
  auto it = md.storage_data.begin();
  const auto end = md.storage_data.end();
  std::vector<const std::vector<int64_t>*> written;  // offsets written for one key
  for (const auto& [fqn, entry] : md.state_dict_metadata) {
    while (it != end && it->first.fqn < fqn) ++it;
    written.clear();
    for (; it != end && it->first.fqn == fqn; ++it) written.push_back(&it->first.offset);
    auto has = [&](const std::vector<int64_t>& offsets) {  // `written` is sorted
      auto pos = std::lower_bound(
          written.begin(), written.end(), &offsets,
          [](const std::vector<int64_t>* a, const std::vector<int64_t>* b) { return *a < *b; });
      return pos != written.end() && **pos == offsets;
    };
    if (const auto* t = std::get_if<TensorStorageMetadata>(&entry)) {
      for (const auto& c : t->chunks)
        if (!has(c.offsets))
          throw Error(ErrorCode::kInternal,
                      "no data was written for " + to_string(MetadataIndex(fqn, c.offsets)));
    } else if (!has({})) {
      throw Error(ErrorCode::kInternal, "no data was written for '" + fqn + "'");
    }
  }
}

class FileSystemWriter final : public StorageWriter {
 public:
  FileSystemWriter(Env* env, std::string scheme, std::string path, FileSystemWriterOptions opt)
      : loc_{env, std::move(scheme), std::move(path)}, opt_(opt) {
    if (opt_.threads < 1)
      throw InvalidArgumentError("FileSystemWriterOptions.threads must be >= 1");
    if (opt_.buffer_bytes < kAlign)
      throw InvalidArgumentError("FileSystemWriterOptions.buffer_bytes is too small");
    save_id_ = random_id();
  }

  void reset(const std::string& checkpoint_id) override {
    loc_.reset(checkpoint_id);
    save_id_ = random_id();
  }

  void set_up_storage_writer(bool is_coordinator, int rank) override {
    rank_ = rank;
    if (loc_.path.empty()) throw InvalidArgumentError("no checkpoint path was given to the writer");
    loc_.env->create_dirs(loc_.path);
    if (!is_coordinator) return;
    const std::string md = loc_.file(kMetadataFileName);
    if (loc_.env->file_exists(md)) {
      if (!opt_.overwrite)
        throw AlreadyExistsError("'" + loc_.id() +
                                 "' already holds a committed checkpoint; refusing to overwrite "
                                 "it (set FileSystemWriterOptions.overwrite to replace it)");
      loc_.env->remove_file(md);
      if (opt_.sync_files) loc_.env->sync_dir(loc_.path);
    }
    // Data files of an earlier (failed or replaced) save would only waste space.
    for (const auto& name : loc_.env->list_dir(loc_.path))
      if (ends_with(name, kDataSuffix) || name == kTmpMetadataName)
        loc_.env->remove_file(loc_.file(name));
  }

  SavePlan prepare_local_plan(SavePlan plan) override { return plan; }

  std::vector<SavePlan> prepare_global_plan(std::vector<SavePlan> plans) override {
    for (size_t r = 0; r < plans.size(); ++r)
      plans[r].storage_data = "__" + std::to_string(r) + "_";
    return plans;
  }

  std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                   SavePlanner& planner) override {
    std::promise<std::vector<WriteResult>> promise;
    try {
      promise.set_value(write_all(plan, planner));
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    return promise.get_future();
  }

  void finish(Metadata& md, const std::vector<std::vector<WriteResult>>& results) override {
    for (const auto& rank_results : results)
      for (const auto& r : rank_results) md.storage_data[r.index] = r.storage_data;
    check_all_written(md);
    md.storage_meta = storage_meta();
    const std::string bytes = serialize_metadata(md);
    const std::string tmp = loc_.file(kTmpMetadataName);
    auto f = loc_.env->new_writable_file(tmp);
    f->append(bytes.data(), bytes.size());
    if (opt_.sync_files) f->sync();
    f->close();
    loc_.env->rename_file(tmp, loc_.file(kMetadataFileName));
    if (opt_.sync_files) loc_.env->sync_dir(loc_.path);
  }

  bool validate_checkpoint_id(const std::string& id) const override { return loc_.accepts(id); }
  std::optional<StorageMeta> storage_meta() const override {
    return StorageMeta{loc_.id(), save_id_};
  }
  std::string checkpoint_id() const override { return loc_.id(); }

 private:
  std::vector<WriteResult> write_all(const SavePlan& plan, SavePlanner& planner) {
    const std::string prefix =
        plan.storage_data.empty() ? "__" + std::to_string(rank_) + "_" : plan.storage_data;
    // Assign items to files: largest first onto the lightest file, then each
    // file keeps plan order (key order: what a loader reads together).
    std::vector<std::vector<size_t>> files;
    if (opt_.file_per_thread) {
      const size_t n_files = std::max<size_t>(1, std::min<size_t>(opt_.threads, plan.items.size()));
      files.resize(n_files);
      std::vector<size_t> order(plan.items.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      auto size_of = [&](size_t i) { return plan.items[i].tensor_storage_size().value_or(0); };
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return size_of(a) > size_of(b); });
      std::vector<int64_t> load(n_files, 0);
      for (size_t i : order) {
        size_t best = std::min_element(load.begin(), load.end()) - load.begin();
        files[best].push_back(i);
        load[best] += size_of(i) + static_cast<int64_t>(kAlign);
      }
      for (auto& f : files) std::sort(f.begin(), f.end());
    } else {
      for (size_t i = 0; i < plan.items.size(); ++i) files.push_back({i});
    }

    std::vector<std::vector<WriteResult>> per_file(files.size());
    run_parallel(opt_.threads, files.size(), [&](size_t fi) {
      const std::string name = prefix + std::to_string(fi) + kDataSuffix;
      bool has_small = false;
      for (size_t i : files[fi])
        if (plan.items[i].tensor_storage_size().value_or(0) <
            static_cast<int64_t>(opt_.coalesce_below_bytes))
          has_small = true;
      FileAppender out(loc_.env->new_writable_file(loc_.file(name)), opt_, has_small);
      auto& results = per_file[fi];
      results.reserve(files[fi].size());
      for (size_t i : files[fi]) {
        const WriteItem& item = plan.items[i];
        WriteData data = planner.resolve_data(item);
        const void* ptr;
        size_t n;
        at::Tensor t;
        if (auto* tp = std::get_if<at::Tensor>(&data)) {
          t = *tp;
          if (!t.device().is_cpu()) t = t.cpu();
          if (!t.is_contiguous()) t = t.contiguous();
          const int64_t expected = item.tensor_storage_size().value_or(-1);
          if (item.type == WriteItemType::kByteIO || static_cast<int64_t>(t.nbytes()) != expected ||
              t.scalar_type() != item.tensor_data->properties.dtype)
            throw InvalidArgumentError(
                "resolve_data gave " + describe(Value(t)) + " for " + to_string(item.index) +
                ", but the plan expects " +
                (item.tensor_data ? std::string(dtype_name(item.tensor_data->properties.dtype)) +
                                        " with " + std::to_string(expected) + " bytes"
                                  : std::string("bytes")));
          ptr = t.data_ptr();
          n = t.nbytes();
        } else {
          if (item.type != WriteItemType::kByteIO)
            throw InvalidArgumentError("resolve_data gave bytes for tensor item " +
                                       to_string(item.index));
          const Bytes& b = std::get<Bytes>(data);
          ptr = b.data.data();
          n = b.data.size();
        }
        auto [offset, checksum] = out.add(ptr, n);
        WriteResult r;
        r.index = item.index;
        r.size_in_bytes = static_cast<int64_t>(n);
        r.storage_data =
            StorageInfo{name, offset, n,
                        opt_.checksums ? ChecksumType::kXXH3_64 : ChecksumType::kNone, checksum};
        results.push_back(std::move(r));
      }
      out.finish();
    });
    std::vector<WriteResult> all;
    all.reserve(plan.items.size());
    for (auto& v : per_file)
      for (auto& r : v) all.push_back(std::move(r));
    return all;
  }

  Location loc_;
  const FileSystemWriterOptions opt_;
  std::string save_id_;
  int rank_ = 0;
};

// ---------------------------------------------------------------------------
// Reader

class FileSystemReader final : public StorageReader {
 public:
  FileSystemReader(Env* env, std::string scheme, std::string path, FileSystemReaderOptions opt)
      : loc_{env, std::move(scheme), std::move(path)}, opt_(opt) {
    if (opt_.threads < 1)
      throw InvalidArgumentError("FileSystemReaderOptions.threads must be >= 1");
  }

  void reset(const std::string& checkpoint_id) override { loc_.reset(checkpoint_id); }

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
    std::promise<void> promise;
    try {
      read_all(plan, planner);
      promise.set_value();
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    return promise.get_future();
  }

  bool validate_checkpoint_id(const std::string& id) const override { return loc_.accepts(id); }
  std::string checkpoint_id() const override { return loc_.id(); }

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
      throw CorruptionError("item " + to_string(*u.index) + " has an unknown checksum type");
    if (XXH3_64bits(data, u.info->length) != u.info->checksum)
      throw CorruptionError("checksum mismatch for item " + to_string(*u.index) + " in '" +
                            u.file->path() + "' (bytes [" + std::to_string(u.info->offset) + ", " +
                            std::to_string(u.info->offset + u.info->length) +
                            ")): the data is corrupt");
  }

  // The saved bytes of `u` are at `src`: verify them and hand them over.
  void deliver(const Unit& u, const char* src, LoadPlanner& planner) {
    verify(u, src);
    if (!u.tensor) {
      Bytes b{std::string(src, u.info->length)};
      std::lock_guard<std::mutex> lock(bytes_mu_);
      for (const ReadItem* ri : u.reads) planner.load_bytes(*ri, b);
      return;
    }
    at::Tensor saved;  // a view of the bytes, made only when a read needs ATen
    for (const ReadItem* ri : u.reads) {
      at::Tensor dst = planner.resolve_tensor(*ri);
      if (covers_whole_chunk(u, *ri) && dst.is_contiguous() && dst.device().is_cpu() &&
          dst.scalar_type() == u.tensor->properties.dtype && dst.nbytes() == u.info->length) {
        // The common case: a plain memcpy (copy_() costs microseconds of dispatch per item).
        std::memcpy(dst.data_ptr(), src, u.info->length);
        planner.commit_tensor(*ri, dst);
        continue;
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
    }
  }

  static bool covers_whole_chunk(const Unit& u, const ReadItem& ri) {
    if (ri.lengths != u.chunk->sizes) return false;
    for (int64_t o : ri.storage_offsets)
      if (o != 0) return false;
    return true;
  }

  // A large item: straight into the destination when it is exactly the saved
  // chunk in contiguous CPU memory; otherwise through a temporary buffer.
  void read_large(const Unit& u, LoadPlanner& planner) {
    if (u.tensor && u.reads.size() == 1) {
      const ReadItem& ri = *u.reads[0];
      if (covers_whole_chunk(u, ri)) {
        at::Tensor dst = planner.resolve_tensor(ri);
        if (dst.is_contiguous() && dst.device().is_cpu() &&
            dst.scalar_type() == u.tensor->properties.dtype && dst.nbytes() == u.info->length) {
          if (u.file->read(u.info->offset, u.info->length, dst.data_ptr()) != u.info->length)
            truncated(u);
          verify(u, dst.data_ptr());
          planner.commit_tensor(ri, dst);
          return;
        }
      }
    }
    std::unique_ptr<char[]> tmp(new char[std::max<uint64_t>(u.info->length, 1)]);
    if (u.file->read(u.info->offset, u.info->length, tmp.get()) != u.info->length) truncated(u);
    deliver(u, tmp.get(), planner);
  }

  void read_all(const LoadPlan& plan, LoadPlanner& planner) {
    std::map<MetadataIndex, Unit> by_index;
    for (const ReadItem& ri : plan.items) {
      Unit& u = by_index[ri.storage_index];
      u.reads.push_back(&ri);
    }
    std::map<std::string, std::unique_ptr<RandomAccessFile>> files;
    std::vector<Unit*> units;
    units.reserve(by_index.size());
    for (auto& [index, u] : by_index) {
      auto info = md_->storage_data.find(index);
      if (info == md_->storage_data.end())
        throw CorruptionError("the metadata of '" + loc_.id() +
                              "' has no storage location for item " + to_string(index));
      u.index = &info->first;
      u.info = &info->second;
      auto entry = md_->state_dict_metadata.find(index.fqn);
      if (entry == md_->state_dict_metadata.end())
        throw CorruptionError("the metadata of '" + loc_.id() + "' has no entry for key '" +
                              index.fqn + "'");
      if (auto* t = std::get_if<TensorStorageMetadata>(&entry->second)) {
        u.tensor = t;
        for (const auto& c : t->chunks)
          if (c.offsets == index.offset) u.chunk = &c;
        if (!u.chunk)
          throw CorruptionError("the metadata of '" + loc_.id() + "' has no chunk for item " +
                                to_string(index));
        int64_t numel = 1;
        for (int64_t s : u.chunk->sizes) numel *= s;
        const uint64_t expect =
            static_cast<uint64_t>(numel) * c10::elementSize(t->properties.dtype);
        if (expect != u.info->length)
          throw CorruptionError("item " + to_string(index) + " has " +
                                std::to_string(u.info->length) +
                                " bytes in storage, its shape needs " + std::to_string(expect));
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
      const size_t got = first.file->read(start, span, buf.data());
      for (size_t i = b; i < e; ++i) {
        const Unit& u = *units[i];
        if (u.info->offset + u.info->length > start + got) truncated(u);
        deliver(u, buf.data() + (u.info->offset - start), planner);
      }
    });
  }

  Location loc_;
  const FileSystemReaderOptions opt_;
  const Metadata* md_ = nullptr;  // set_up_storage_reader's; outlives read_data
  std::mutex bytes_mu_;           // serializes planner.load_bytes
};

}  // namespace

std::shared_ptr<StorageWriter> make_filesystem_writer(const std::string& path,
                                                      FileSystemWriterOptions options) {
  return std::make_shared<FileSystemWriter>(posix_env(), "", path, options);
}
std::shared_ptr<StorageReader> make_filesystem_reader(const std::string& path,
                                                      FileSystemReaderOptions options) {
  return std::make_shared<FileSystemReader>(posix_env(), "", path, options);
}

bool is_committed_checkpoint(const std::string& path) {
  return posix_env()->file_exists(join_path(path, kMetadataFileName));
}

namespace {
std::string memory_path(const std::string& id) {
  const std::string scheme = "memory://";
  return id.compare(0, scheme.size(), scheme) == 0 ? id.substr(scheme.size()) : id;
}
}  // namespace

std::shared_ptr<StorageWriter> make_memory_writer(const std::string& checkpoint_id,
                                                  FileSystemWriterOptions options) {
  return std::make_shared<FileSystemWriter>(memory_env(), "memory://", memory_path(checkpoint_id),
                                            options);
}
std::shared_ptr<StorageReader> make_memory_reader(const std::string& checkpoint_id,
                                                  FileSystemReaderOptions options) {
  return std::make_shared<FileSystemReader>(memory_env(), "memory://", memory_path(checkpoint_id),
                                            options);
}

}  // namespace dcp
