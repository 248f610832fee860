// The file-system storage backend (and, over another Env, the memory one):
// the writer here, the reader in filesystem_reader.cpp.
//
// Commit protocol of a save (writer side):
//   1. set_up (coordinator): create the directory; if it holds a committed
//      checkpoint, refuse (AlreadyExistsError) unless overwrite is on, in
//      which case remove .metadata first and fsync the directory, so the old
//      metadata never describes new data. Stale data files are removed.
//   2. write_data (every rank): each worker thread writes its own data file
//      __<rank>_<n>.distcp from tensor memory, then fdatasyncs and closes it
//      (the coordinator's are synced on threads of their own while it goes
//      on to step 3; the other ranks' before they report their results).
//   3. finish (coordinator): serialize the metadata, write .metadata.tmp and
//      fdatasync it (while its own data files may still be syncing), wait
//      for its data files' syncs, rename .metadata.tmp to .metadata, fsync
//      the directory.
// The rename in step 3 is the commit point: before it the directory is not a
// checkpoint (no reader accepts it); after it every byte it names is durable.
//
// In the pytorch-dcp format (interop/pytorch_dcp_writer.h) step 2 writes
// every item as a torch.save archive (the tensor's bytes still streamed from
// its memory, XXH3 and the zip's CRC-32 taken piece by piece as they go), and
// step 3 writes and fdatasyncs two temporary files, the sidecar and the
// pickle, then renames the sidecar to .metadata.dcp (fsync of the
// directory) and the pickle to .metadata, as above.

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <tuple>

#include "chunk_validation.h"
#include "data_file.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/memory_storage.h"
#include "env.h"
#include "filesystem_common.h"
#include "interop/pytorch_dcp_writer.h"
#include "xxh3.h"

namespace dcp {

using namespace internal;

namespace {

using fs::FileAppender;
using fs::kAlign;
using fs::kPieceBytes;
using fs::Location;
using fs::PendingSyncs;
using fs::run_parallel;

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

// ---------------------------------------------------------------------------
// Writer

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

// md.storage_data gets every result's storage, as assigning them one by one
// in order would (of equal indexes, the last wins), without a tree search per
// item: a natural merge sort of pointers (results come in sorted runs, each
// data file's items in key order: O(n log runs) comparisons), then each
// inserted at the end.
void add_storage_data(Metadata& md, const std::vector<std::vector<WriteResult>>& results) {
  auto less = [](const WriteResult* a, const WriteResult* b) { return a->index < b->index; };
  std::vector<const WriteResult*> all;
  size_t n = 0;
  for (const auto& v : results) n += v.size();
  all.reserve(n);
  std::vector<size_t> runs{0};  // run i is all[runs[i], runs[i + 1])
  for (const auto& v : results)
    for (const auto& r : v) {
      if (!all.empty() && less(&r, all.back())) runs.push_back(all.size());
      all.push_back(&r);
    }
  runs.push_back(all.size());
  while (runs.size() > 2) {
    const size_t k = runs.size() - 1;
    std::vector<size_t> next{0};
    for (size_t i = 0; i + 2 < runs.size(); i += 2) {
      std::inplace_merge(all.begin() + runs[i], all.begin() + runs[i + 1],
                         all.begin() + runs[i + 2], less);
      next.push_back(runs[i + 2]);
    }
    if (k % 2 == 1) next.push_back(runs.back());
    runs.swap(next);
  }
  auto& out = md.storage_data;
  for (size_t i = 0; i < all.size(); ++i) {
    if (i + 1 < all.size() && !less(all[i], all[i + 1])) continue;  // a later one wins
    out.insert_or_assign(out.end(), all[i]->index, all[i]->storage_data);
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
    if (opt_.format != StorageFormat::kDcp && opt_.format != StorageFormat::kPyTorchDcp)
      throw InvalidArgumentError("FileSystemWriterOptions.format is not a StorageFormat (" +
                                 std::to_string(static_cast<int>(opt_.format)) + ")");
    pytorch_ = opt_.format == StorageFormat::kPyTorchDcp;
    if (pytorch_) flavour_ = pytorch_flavour(opt_.pytorch_version);
    save_id_ = random_id();
  }

  void reset(const std::string& checkpoint_id) override {
    syncs_.discard();  // of a save that failed before its commit
    loc_.reset(checkpoint_id);
    save_id_ = random_id();
  }

  void set_up_storage_writer(bool is_coordinator, int rank) override {
    syncs_.discard();
    rank_ = rank;
    is_coordinator_ = is_coordinator;
    if (loc_.path.empty()) throw InvalidArgumentError("no checkpoint path was given to the writer");
    // Every rank: a directory entry is durable only by a sync of its parent
    // from the machine that made it.
    loc_.env->create_dirs_durably(loc_.path, opt_.sync_files);
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
    // Data files of an earlier (failed or replaced) save would only waste
    // space; its sidecar would describe another save.
    for (const auto& name : loc_.env->list_dir(loc_.path))
      if (ends_with(name, kDataSuffix) || name == kTmpMetadataName || name == kSidecarName ||
          name == kSidecarTmpName)
        loc_.env->remove_file(loc_.file(name));
  }

  SavePlan prepare_local_plan(SavePlan plan) override {
    if (pytorch_) check_pytorch_plan(plan);
    return plan;
  }

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

  // The metadata is built while this rank's own data files are still being
  // synced (write_data); the commit waits for them.
  void finish(Metadata& md, const std::vector<std::vector<WriteResult>>& results) override {
    add_storage_data(md, results);
    check_all_written(md);
    md.storage_meta = storage_meta();
    // The temporary files are written and made durable while the data files
    // still sync; only the renames wait for those.
    if (!pytorch_) {
      write_durably(kTmpMetadataName, serialize_metadata(md));
      syncs_.wait();
      rename_durably(kTmpMetadataName, kMetadataFileName);
      return;
    }
    const std::string pickle = pytorch_metadata_pickle(md, flavour_, loc_.id(), save_id_);
    write_durably(kSidecarTmpName, pytorch_sidecar(md, pickle));
    write_durably(kTmpMetadataName, pickle);
    syncs_.wait();
    // The sidecar is in place before the commit, so a committed checkpoint has it.
    rename_durably(kSidecarTmpName, kSidecarName);
    rename_durably(kTmpMetadataName, kMetadataFileName);
  }

  bool validate_checkpoint_id(const std::string& id) const override { return loc_.accepts(id); }
  std::optional<StorageMeta> storage_meta() const override {
    return StorageMeta{loc_.id(), save_id_};
  }
  std::string checkpoint_id() const override { return loc_.id(); }

 private:
  // `bytes` into the file `tmp_name`, made durable.
  void write_durably(const char* tmp_name, const std::string& bytes) {
    auto f = loc_.env->new_writable_file(loc_.file(tmp_name));
    f->append(bytes.data(), bytes.size());
    if (opt_.sync_files) f->sync();
    f->close();
  }

  // `tmp_name` (made durable by write_durably) renamed to `name`, the rename
  // made durable.
  void rename_durably(const char* tmp_name, const char* name) {
    loc_.env->rename_file(loc_.file(tmp_name), loc_.file(name));
    if (!opt_.sync_files) return;
    try {
      loc_.env->sync_dir(loc_.path);
    } catch (...) {
      // The save fails, so `name` (.metadata: the commit point) must not
      // stay and make the directory pass for a committed checkpoint.
      try {
        loc_.env->remove_file(loc_.file(name));
      } catch (...) {
      }
      throw;
    }
  }

  // Items to files: largest first onto the lightest file, then each file
  // keeps plan order (key order: what a loader reads together).
  // `sizes` are the items' tensor_storage_size() (0 for bytes).
  std::vector<std::vector<size_t>> assign_files(const SavePlan& plan,
                                                const std::vector<int64_t>& sizes) const {
    std::vector<std::vector<size_t>> files;
    if (opt_.file_per_thread) {
      const size_t n_files = std::max<size_t>(1, std::min<size_t>(opt_.threads, plan.items.size()));
      files.resize(n_files);
      std::vector<size_t> order(plan.items.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      auto size_of = [&](size_t i) { return sizes[i]; };
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
    return files;
  }

  // The bytes of a BYTE_IO item, which resolve_data must give.
  static const Bytes& item_bytes(const WriteItem& item, const WriteData& data) {
    if (item.type != WriteItemType::kByteIO)
      throw InvalidArgumentError("resolve_data gave bytes for tensor item " +
                                 to_string(item.index));
    return std::get<Bytes>(data);
  }

  // The tensor of a tensor item, CPU and contiguous, checked against the plan.
  static at::Tensor item_tensor(const WriteItem& item, at::Tensor t) {
    if (!t.device().is_cpu()) t = t.cpu();
    if (!t.is_contiguous()) t = t.contiguous();
    const int64_t expected = item.tensor_storage_size().value_or(-1);
    // The shape too: the reader reads the bytes back in the chunk's shape.
    if (item.type == WriteItemType::kByteIO || static_cast<int64_t>(t.nbytes()) != expected ||
        t.scalar_type() != item.tensor_data->properties.dtype ||
        t.sizes() != at::IntArrayRef(item.tensor_data->chunk.sizes))
      throw InvalidArgumentError(
          "resolve_data gave " + describe(Value(t)) + " for " + to_string(item.index) +
          ", but the plan expects " +
          (item.tensor_data ? std::string(dtype_name(item.tensor_data->properties.dtype)) +
                                  shape_str(item.tensor_data->chunk.sizes) + " (" +
                                  std::to_string(expected) + " bytes)"
                            : std::string("bytes")));
    return t;
  }

  // pytorch-dcp: the archives of the plan's BYTE_IO items (small), made
  // before any file is opened, so that a value Python cannot hold (text that
  // is not UTF-8) fails the save before this rank writes anything; with the
  // XXH3-64 of the planner's bytes (what the replica check compares).
  struct BytesArchive {
    std::string archive;
    uint64_t checksum = 0;
  };
  std::map<size_t, BytesArchive> bytes_archives(const SavePlan& plan, SavePlanner& planner) const {
    std::map<size_t, BytesArchive> out;
    for (size_t i = 0; i < plan.items.size(); ++i) {
      const WriteItem& item = plan.items[i];
      if (item.type != WriteItemType::kByteIO) continue;
      const WriteData data = planner.resolve_data(item);
      if (std::holds_alternative<at::Tensor>(data)) item_tensor(item, std::get<at::Tensor>(data));
      const Bytes& b = item_bytes(item, data);
      BytesArchive& a = out[i];
      a.archive = bytes_item_archive(b, "key '" + item.index.fqn + "' (pytorch-dcp format)");
      if (opt_.checksums) a.checksum = xxh3_64(b.data.data(), b.data.size());
    }
    return out;
  }

  std::vector<WriteResult> write_all(const SavePlan& plan, SavePlanner& planner) {
    syncs_.wait();  // of an earlier write_data() of this save: its failure is this one's
    const std::string prefix =
        plan.storage_data.empty() ? "__" + std::to_string(rank_) + "_" : plan.storage_data;
    std::vector<int64_t> sizes(plan.items.size());
    for (size_t i = 0; i < sizes.size(); ++i)
      sizes[i] = plan.items[i].tensor_storage_size().value_or(0);
    const std::vector<std::vector<size_t>> files = assign_files(plan, sizes);
    // The coordinator's files are synced on threads of their own, while it
    // goes on to the commit round (finish() waits for them); another rank's
    // results tell the coordinator its data is durable, so it syncs first.
    // A file per item (file_per_thread off) is synced and closed as it is
    // written: not thousands of open files and threads.
    const bool defer_sync =
        opt_.sync_files && is_coordinator_ && files.size() <= static_cast<size_t>(opt_.threads);
    const std::map<size_t, BytesArchive> archives =
        pytorch_ ? bytes_archives(plan, planner) : std::map<size_t, BytesArchive>{};

    std::vector<std::vector<WriteResult>> per_file(files.size());
    std::vector<std::unique_ptr<WritableFile>> written(files.size());
    run_parallel(opt_.threads, files.size(), [&](size_t fi) {
      const std::string name = prefix + std::to_string(fi) + kDataSuffix;
      // (zip headers and the BYTE_IO archives of the pytorch-dcp format are small)
      bool has_small = pytorch_;
      for (size_t i : files[fi])
        if (sizes[i] < static_cast<int64_t>(opt_.coalesce_below_bytes)) has_small = true;
      const std::string path = loc_.file(name);
      FileAppender out(opt_.direct_io ? loc_.env->new_direct_writable_file(path)
                                      : loc_.env->new_writable_file(path),
                       opt_, has_small);
      auto& results = per_file[fi];
      results.reserve(files[fi].size());
      for (size_t i : files[fi]) {
        const WriteItem& item = plan.items[i];
        uint64_t offset = 0, length = 0, checksum = 0;
        size_t n = 0;
        if (auto a = archives.find(i); a != archives.end()) {
          offset = out.begin_item();
          out.write(a->second.archive.data(), a->second.archive.size());
          length = a->second.archive.size();
          checksum = a->second.checksum;
          n = length;
        } else {
          WriteData data = planner.resolve_data(item);
          const void* ptr;
          at::Tensor t;
          if (auto* tp = std::get_if<at::Tensor>(&data)) {
            t = item_tensor(item, *tp);
            ptr = t.data_ptr();
            n = t.nbytes();
          } else {
            const Bytes& b = item_bytes(item, data);
            ptr = b.data.data();
            n = b.data.size();
          }
          if (pytorch_) {
            // A tensor: its torch.save archive, the bytes streamed from its memory.
            offset = out.begin_item();
            length = write_tensor_archive([&out](const void* p, size_t k) { out.write(p, k); }, ptr,
                                          n, t.scalar_type(), item.tensor_data->chunk.sizes,
                                          kPieceBytes, opt_.checksums ? &checksum : nullptr,
                                          "item " + to_string(item.index));
          } else {
            std::tie(offset, checksum) = out.add(ptr, n);
            length = n;
          }
        }
        WriteResult r;
        r.index = item.index;
        r.size_in_bytes = static_cast<int64_t>(n);
        // pytorch-dcp: the item is the archive; its checksum, dcp++'s XXH3-64
        // of what the planner gave (the tensor's bytes, the planner's bytes).
        r.storage_data =
            StorageInfo{name, offset, length,
                        opt_.checksums ? ChecksumType::kXXH3_64 : ChecksumType::kNone, checksum};
        results.push_back(std::move(r));
      }
      if (defer_sync) {
        written[fi] = out.release();
      } else {
        out.finish();
      }
    });
    // (Started here, by the save's thread, not by a pool worker: a thread
    // takes its creator's priority.)
    for (auto& f : written)
      if (f) syncs_.start(std::move(f));
    std::vector<WriteResult> all;
    all.reserve(plan.items.size());
    for (auto& v : per_file)
      for (auto& r : v) all.push_back(std::move(r));
    return all;
  }

  Location loc_;
  const FileSystemWriterOptions opt_;
  bool pytorch_ = false;  // the pytorch-dcp format
  PyTorchFlavour flavour_ = PyTorchFlavour::k2;
  std::string save_id_;
  int rank_ = 0;
  bool is_coordinator_ = false;
  PendingSyncs syncs_;  // the coordinator's data files, until finish()
};

}  // namespace

namespace {
constexpr const char kMemoryScheme[] = "memory://";

// The Env, display scheme and Env path of a checkpoint id: "memory://x" is
// "x" in the memory Env (or options.env), anything else a POSIX path.
Location locate(const std::string& id, Env* env) {
  const std::string path = env_path(id);
  const std::string scheme = path.size() == id.size() ? "" : kMemoryScheme;
  return Location{env ? env : env_for(id), scheme, path};
}
}  // namespace

const char* storage_format_name(StorageFormat format) {
  switch (format) {
    case StorageFormat::kDcp:
      return "dcp++";
    case StorageFormat::kPyTorchDcp:
      return "pytorch-dcp";
  }
  return "unknown";
}

StorageFormat storage_format_from_name(const std::string& name) {
  for (StorageFormat f : {StorageFormat::kDcp, StorageFormat::kPyTorchDcp})
    if (name == storage_format_name(f)) return f;
  throw InvalidArgumentError("unknown storage format '" + name + "' (known: dcp++, pytorch-dcp)");
}

std::shared_ptr<StorageWriter> make_filesystem_writer(const std::string& path,
                                                      FileSystemWriterOptions options) {
  Location loc = locate(path, options.env);
  return std::make_shared<FileSystemWriter>(loc.env, loc.scheme, loc.path, options);
}
std::shared_ptr<StorageReader> make_filesystem_reader(const std::string& path,
                                                      FileSystemReaderOptions options) {
  Location loc = locate(path, options.env);
  return fs::new_reader(loc.env, loc.scheme, loc.path, options);
}

bool is_committed_checkpoint(const std::string& path, Env* env) {
  Location loc = locate(path, env);
  return loc.env->file_exists(loc.file(kMetadataFileName));
}

}  // namespace dcp
