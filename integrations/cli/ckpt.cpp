// ckpt: look inside a checkpoint: dcp++'s, or PyTorch's (a DCP directory, a
// torch.save file, safetensors; docs/INTEROP.md).
//
//   ckpt show   DIR [--items]   what the checkpoint holds: keys, dtypes, shapes,
//                               chunks, bytes, files (--items: every item's place)
//   ckpt verify DIR [--threads N]
//                               read every item and check its checksum
//                               (exit 0: intact; 1: damaged, naming file and key);
//                               a CheckpointManager's checkpoint must also have a
//                               valid dcp_manager.record of its step
//
// DIR is a checkpoint directory or file (or memory://, fs:// ids for tests). It is a
// CheckpointManager's when it holds a dcp_manager.record or is named like the
// manager's step directories (step_ and at least 10 digits).
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "dcp/dcp.h"
#include "dcp/manager/manager.h"

namespace {

std::string shape(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string human(uint64_t bytes) {
  char buf[64];
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

// DIR names a CheckpointManager's checkpoint: it has a record, or its name
// is the manager's step_<10+ digits>.
bool is_manager_checkpoint(std::string dir) {
  if (file_exists(dir + "/dcp_manager.record")) return true;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string name = dir.substr(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/') + 1);
  return name.rfind("step_", 0) == 0 && name.size() >= 15 &&
         name.find_first_not_of("0123456789", 5) == std::string::npos;
}

std::string describe(const dcp::manager::CheckpointInfo& r) {
  std::string s = "step " + std::to_string(r.step) + ", world size " + std::to_string(r.world_size);
  for (const auto& [k, v] : r.metrics) s += ", " + k + " " + std::to_string(v);
  return s;
}

int show(const std::string& dir, bool items) {
  dcp::Metadata md = dcp::read_metadata(dir);
  std::map<std::string, uint64_t> per_file;
  for (const auto& [index, info] : md.storage_data) per_file[info.relative_path] += info.length;
  std::printf("checkpoint %s\n", dir.c_str());
  const std::string format = dcp::checkpoint_format(dir);
  if (format == "dcp++")
    std::printf("  format version %u, written by dcp++ %s from %d rank(s)\n", md.version,
                md.library_version.c_str(), md.world_size);
  else
    std::printf("  format: %s, from %d rank(s)\n", md.library_version.c_str(), md.world_size);
  if (md.storage_meta && !md.storage_meta->save_id.empty())
    std::printf("  saved to %s (save id %s)\n", md.storage_meta->checkpoint_id.c_str(),
                md.storage_meta->save_id.c_str());
  if (is_manager_checkpoint(dir)) {
    try {
      std::printf("  manager record: %s\n",
                  describe(dcp::manager::read_checkpoint_record(dir)).c_str());
    } catch (const dcp::Error& e) {
      std::printf("  manager record: %s\n", e.what());
    }
  }
  std::printf("  %zu keys, %zu items, %s in %zu data files\n", md.state_dict_metadata.size(),
              md.storage_data.size(), human(md.total_bytes()).c_str(), per_file.size());
  std::printf("\n%-48s %-10s %-20s %s\n", "key", "dtype", "shape", "chunks");
  for (const auto& [key, entry] : md.state_dict_metadata) {
    if (const auto* t = std::get_if<dcp::TensorStorageMetadata>(&entry))
      std::printf("%-48s %-10s %-20s %zu\n", key.c_str(), dcp::dtype_name(t->properties.dtype),
                  shape(t->size).c_str(), t->chunks.size());
    else
      std::printf("%-48s %-10s\n", key.c_str(), "bytes");
  }
  std::printf("\n%-32s %s\n", "file", "bytes");
  for (const auto& [file, bytes] : per_file)
    std::printf("%-32s %s\n", file.c_str(), human(bytes).c_str());
  if (items) {
    std::printf("\n%-48s %-24s %-12s %-12s %s\n", "item", "file", "offset", "length", "checksum");
    for (const auto& [index, info] : md.storage_data)
      std::printf("%-48s %-24s %-12llu %-12llu %016llx\n", dcp::to_string(index).c_str(),
                  info.relative_path.c_str(), static_cast<unsigned long long>(info.offset),
                  static_cast<unsigned long long>(info.length),
                  static_cast<unsigned long long>(info.checksum));
  }
  return 0;
}

// Plans a read of every saved item into a throw-away buffer: the reader
// checks each checksum as it goes, and nothing is kept.
class VerifyPlanner : public dcp::DefaultLoadPlanner {
 public:
  explicit VerifyPlanner(std::shared_ptr<dcp::StorageReader> reader) : reader_(std::move(reader)) {}
  // Values of other formats dcp++ cannot represent: not read (key -> why).
  const std::map<std::string, std::string>& unreadable() const { return unreadable_; }

  dcp::LoadPlan create_local_plan() override {
    dcp::LoadPlan plan;
    unreadable_ = reader_->unreadable_keys();
    for (const auto& [key, entry] : metadata_->state_dict_metadata) {
      if (unreadable_.count(key)) continue;
      if (const auto* t = std::get_if<dcp::TensorStorageMetadata>(&entry)) {
        for (const auto& c : t->chunks) {
          dcp::ReadItem ri;
          ri.type = dcp::LoadItemType::kTensor;
          ri.dest_index = dcp::MetadataIndex(key, c.offsets);
          ri.storage_index = dcp::MetadataIndex(key, c.offsets);
          ri.dest_offsets = ri.storage_offsets = std::vector<int64_t>(c.sizes.size(), 0);
          ri.lengths = c.sizes;
          plan.items.push_back(std::move(ri));
        }
      } else {
        dcp::ReadItem ri;
        ri.type = dcp::LoadItemType::kByteIO;
        ri.dest_index = ri.storage_index = dcp::MetadataIndex(key);
        plan.items.push_back(std::move(ri));
      }
    }
    return plan;
  }
  void load_bytes(const dcp::ReadItem& item, const dcp::Bytes& value) override {
    dcp::decode_plain_value(value.data, "key '" + item.dest_index.fqn + "'");  // must parse
  }
  at::Tensor resolve_tensor(const dcp::ReadItem& item) override {
    const auto& t = std::get<dcp::TensorStorageMetadata>(
        metadata_->state_dict_metadata.at(item.dest_index.fqn));
    return at::empty(item.lengths, at::TensorOptions().dtype(t.properties.dtype));
  }
  void commit_tensor(const dcp::ReadItem&, at::Tensor&) override {}

 private:
  std::shared_ptr<dcp::StorageReader> reader_;
  std::map<std::string, std::string> unreadable_;
};

int verify(const std::string& dir, int threads) {
  const auto t0 = std::chrono::steady_clock::now();
  // A manager's checkpoint is committed only with a valid record of its step.
  std::string record;
  if (is_manager_checkpoint(dir))
    record = "; manager record: " + describe(dcp::manager::read_checkpoint_record(dir));
  dcp::Metadata md = dcp::read_metadata(dir);
  dcp::FileSystemReaderOptions ro;
  ro.threads = threads;
  ro.verify_checksums = true;
  dcp::LoadOptions lo;
  lo.storage_reader = dir.rfind("memory://", 0) == 0 ? dcp::make_memory_reader(dir, ro)
                                                     : dcp::make_filesystem_reader(dir, ro);
  auto planner = std::make_shared<VerifyPlanner>(lo.storage_reader);
  lo.planner = planner;
  dcp::StateDict none;
  dcp::load(none, lo);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string format = dcp::checkpoint_format(dir);
  std::string note;
  if (format == "dcp++") {
    std::size_t unchecked = 0;
    for (const auto& [index, info] : md.storage_data)
      unchecked += info.checksum_type == dcp::ChecksumType::kNone;
    if (unchecked) note = " (" + std::to_string(unchecked) + " items have no checksum)";
  } else if (format == "safetensors") {
    note = " (" + format + ": no checksums in the format; its structure was checked)";
  } else {
    std::size_t with_xxh3 = 0;  // a PyTorch DCP checkpoint dcp++ wrote: its sidecar's checksums
    for (const auto& [index, info] : md.storage_data)
      with_xxh3 += info.checksum_type == dcp::ChecksumType::kXXH3_64;
    note = with_xxh3 ? " (" + format +
                           " written by dcp++: every item's XXH3-64 checksum from .metadata.dcp "
                           "was checked)"
                     : " (" + format + ": the CRC-32 of every zip record was checked)";
  }
  std::printf("%s: intact: %zu items, %s read in %.2f s%s%s\n", dir.c_str(),
              md.storage_data.size() - planner->unreadable().size(),
              human(md.total_bytes()).c_str(), secs, note.c_str(), record.c_str());
  for (const auto& [key, why] : planner->unreadable())
    std::printf("  not read: '%s': %s\n", key.c_str(), why.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ckpt: look inside a checkpoint (dcp++, PyTorch DCP, torch.save, safetensors)"};
  app.require_subcommand(1);
  std::string dir;
  bool items = false;
  int threads = 2;
  auto* show_cmd = app.add_subcommand("show", "print what a checkpoint holds");
  show_cmd
      ->add_option("dir", dir,
                   "checkpoint: a directory (dcp++, PyTorch DCP, Hugging Face) or a "
                   ".pt/.pth/.safetensors file")
      ->required();
  show_cmd->add_flag("--items", items, "also list every item's file, offset, length and checksum");
  auto* verify_cmd = app.add_subcommand("verify", "read every item and check its checksum");
  verify_cmd
      ->add_option("dir", dir,
                   "checkpoint: a directory (dcp++, PyTorch DCP, Hugging Face) or a "
                   ".pt/.pth/.safetensors file")
      ->required();
  verify_cmd->add_option("--threads", threads, "reader threads")->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  try {
    if (*show_cmd) return show(dir, items);
    return verify(dir, threads);
  } catch (const dcp::Error& e) {
    std::fprintf(stderr, "ckpt: %s\n", e.what());
    return 1;
  }
}
