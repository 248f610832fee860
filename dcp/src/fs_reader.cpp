// The file-system storage backend's reader (and, over another Env, the
// memory one's): items grouped by saved chunk and sorted by file offset,
// small ones read in runs, large ones straight into their destination.
#include <xxhash.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "buffer_pool.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "env.h"
#include "fs_common.h"

namespace dcp {

namespace {

using fs::Location;
using fs::run_parallel;

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

std::shared_ptr<StorageReader> fs::new_reader(Env* env, std::string scheme, std::string path,
                                              FileSystemReaderOptions options) {
  return std::make_shared<FileSystemReader>(env, std::move(scheme), std::move(path), options);
}

}  // namespace dcp
