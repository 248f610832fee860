// Which format a checkpoint path holds, from what is there, and the reader
// make_filesystem_reader() returns: it decides when first used (on every
// rank: non-coordinators first meet it in set_up_storage_reader) and hands
// every call to the native reader or to a catalog reader.
#include <cstring>

#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "env.h"
#include "filesystem_common.h"
#include "interop/catalog.h"
#include "interop/torch_save.h"
#include "sequential_reads.h"

namespace dcp {
namespace internal {

namespace {

std::string head_of(Env& env, const std::string& path, size_t n) {
  std::unique_ptr<RandomAccessFile> f = env.new_random_access_file(path);
  std::string b(n, '\0');
  b.resize(f->read(0, n, b.data()));
  return b;
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// A safetensors file starts with a u64 header length and then '{'.
bool looks_like_safetensors(const std::string& head) {
  if (head.size() < 9 || head[8] != '{') return false;
  uint64_t n = 0;
  std::memcpy(&n, head.data(), 8);
  return n > 0 && n <= 100000000;
}

}  // namespace

Detected detect_format(Env& env, const std::string& path) {
  try {
    if (env.dir_exists(path)) {
      const std::string md = join_path(path, kMetadataFileName);
      if (env.file_exists(md)) {
        const std::string head = head_of(env, md, 1);
        // A pickle starts with PROTO (0x80); dcp++'s metadata with its magic.
        if (!head.empty() && static_cast<unsigned char>(head[0]) == 0x80)
          return {pytorch_dcp_catalog, "PyTorch DCP"};
        return {};
      }
      bool safetensors = false;
      for (const std::string& name : env.list_dir(path)) {
        if (is_rank_metadata_name(name)) return {pytorch_dcp_catalog, "PyTorch DCP"};
        if (name == "model.safetensors.index.json" || ends_with(name, ".safetensors"))
          safetensors = true;
      }
      if (safetensors) return {safetensors_catalog, "safetensors"};
      return {};
    }
    if (env.file_exists(path)) {
      const std::string head = head_of(env, path, 16);
      if (head.compare(0, 4, "PK\x03\x04") == 0 || is_legacy_torch_save(head))
        return {torch_save_catalog, "torch.save"};
      if (ends_with(path, ".safetensors") || looks_like_safetensors(head))
        return {safetensors_catalog, "safetensors"};
      return {[](Env&, const std::string&, const std::string& display) -> Catalog {
                throw InvalidArgumentError(
                    "'" + display +
                    "' is a file that is neither a torch.save archive (.pt, .pth) nor a "
                    "safetensors file; a dcp++ or PyTorch DCP checkpoint is a directory");
              },
              "unknown file"};
    }
  } catch (const Error&) {
    // Unreadable: the native reader reports it (not found, no permission).
  }
  return {};
}

namespace {

class AutoReader final : public StorageReader {
 public:
  AutoReader(Env* env, std::string scheme, std::string path, FileSystemReaderOptions opt)
      : loc_{env, std::move(scheme), std::move(path)}, opt_(opt) {
    if (opt_.threads < 1)
      throw InvalidArgumentError("FileSystemReaderOptions.threads must be >= 1");
  }

  void reset(const std::string& checkpoint_id) override {
    loc_.reset(checkpoint_id);
    impl_.reset();
  }
  Metadata read_metadata() override { return impl().read_metadata(); }
  void set_up_storage_reader(const Metadata& metadata, bool is_coordinator) override {
    impl().set_up_storage_reader(metadata, is_coordinator);
  }
  LoadPlan prepare_local_plan(LoadPlan plan) override {
    return impl().prepare_local_plan(std::move(plan));
  }
  std::vector<LoadPlan> prepare_global_plan(std::vector<LoadPlan> plans) override {
    return impl().prepare_global_plan(std::move(plans));
  }
  std::future<void> read_data(const LoadPlan& plan, LoadPlanner& planner) override {
    return impl().read_data(plan, planner);
  }
  bool validate_checkpoint_id(const std::string& id) const override { return loc_.accepts(id); }
  std::string checkpoint_id() const override { return loc_.id(); }
  std::map<std::string, std::string> unreadable_keys() const override {
    return impl_ ? impl_->unreadable_keys() : std::map<std::string, std::string>{};
  }
  SequentialReads* sequential() const { return dynamic_cast<SequentialReads*>(impl_.get()); }

 private:
  StorageReader& impl() {
    if (!impl_) {
      Detected d = loc_.path.empty() ? Detected{} : detect_format(*loc_.env, loc_.path);
      impl_ = d.build ? new_catalog_reader(loc_.env, loc_.scheme, loc_.path, d.build, opt_)
                      : fs::new_native_reader(loc_.env, loc_.scheme, loc_.path, opt_);
    }
    return *impl_;
  }

  fs::Location loc_;
  const FileSystemReaderOptions opt_;
  std::shared_ptr<StorageReader> impl_;
};

}  // namespace

SequentialReads* sequential_reads(StorageReader& reader) {
  if (auto* a = dynamic_cast<AutoReader*>(&reader)) return a->sequential();
  return dynamic_cast<SequentialReads*>(&reader);
}

}  // namespace internal

std::string checkpoint_format(const std::string& path, Env* env) {
  Env* e = env ? env : env_for(path);
  const internal::Detected d = internal::detect_format(*e, env ? path : env_path(path));
  return d.build ? d.format : "dcp++";
}

namespace internal {

std::shared_ptr<StorageReader> fs::new_reader(Env* env, std::string scheme, std::string path,
                                              FileSystemReaderOptions options) {
  return std::make_shared<AutoReader>(env, std::move(scheme), std::move(path), options);
}

}  // namespace internal
}  // namespace dcp
