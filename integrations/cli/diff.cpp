// ckpt diff A B: the keys added (in B, not in A), removed and changed. Two
// dcp++ checkpoints whose items were saved in the same chunks are compared
// by their XXH3-64 checksums without reading the data; otherwise (sharded
// differently, another format: PyTorch DCP, torch.save, safetensors, a
// dtype changed, items without checksums) the values are read, one key at a
// time from each side, and compared bit for bit. --values reads the changed
// tensors and prints the largest absolute difference of each. Read only.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <vector>

#include "run_dir.h"

namespace ckpt {

namespace {

std::string shape_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Hands the reader the destinations: the whole tensor of one key (each chunk
// read into its place), or a plain value.
class KeyPlanner final : public dcp::LoadPlanner {
 public:
  at::Tensor dst;
  dcp::Value value;
  bool got_value = false;

  void set_up_planner(dcp::StateDict&, const dcp::Metadata&, bool) override {}
  dcp::LoadPlan create_local_plan() override { return {}; }
  std::vector<dcp::LoadPlan> create_global_plan(std::vector<dcp::LoadPlan> plans) override {
    return plans;
  }
  dcp::LoadPlan finish_plan(dcp::LoadPlan plan) override { return plan; }
  void load_bytes(const dcp::ReadItem& item, const dcp::Bytes& b) override {
    value = dcp::decode_plain_value(b.data, "key '" + item.dest_index.fqn + "'");
    got_value = true;
  }
  at::Tensor resolve_tensor(const dcp::ReadItem& item) override {
    at::Tensor v = dst;
    for (size_t d = 0; d < item.lengths.size(); ++d)
      v = v.narrow(static_cast<int64_t>(d), item.dest_offsets[d], item.lengths[d]);
    return v;
  }
  void commit_tensor(const dcp::ReadItem&, at::Tensor&) override {}
};

// One side of the comparison: its metadata, and values read on demand.
class Side {
 public:
  Side(const std::string& path, int threads) : path_(path) {
    dcp::FileSystemReaderOptions ro;
    ro.threads = threads;
    reader_ = dcp::make_filesystem_reader(path, ro);
    md_ = reader_->read_metadata();
    reader_->set_up_storage_reader(md_, /*is_coordinator=*/true);
    unreadable_ = reader_->unreadable_keys();
    format_ = dcp::checkpoint_format(path);
  }
  const dcp::Metadata& md() const { return md_; }
  const std::string& format() const { return format_; }
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& unreadable() const { return unreadable_; }

  at::Tensor tensor(const std::string& key) {
    const auto& t = std::get<dcp::TensorStorageMetadata>(md_.state_dict_metadata.at(key));
    KeyPlanner planner;
    planner.dst = at::zeros(t.size, at::TensorOptions().dtype(t.properties.dtype));
    dcp::LoadPlan plan;
    for (const auto& c : t.chunks) {
      int64_t n = 1;
      for (int64_t s : c.sizes) n *= s;
      if (n == 0) continue;
      dcp::ReadItem ri;
      ri.type = dcp::LoadItemType::kTensor;
      ri.dest_index = dcp::MetadataIndex(key, c.offsets);
      ri.storage_index = dcp::MetadataIndex(key, c.offsets);
      ri.dest_offsets = c.offsets;
      ri.storage_offsets = std::vector<int64_t>(c.sizes.size(), 0);
      ri.lengths = c.sizes;
      plan.items.push_back(std::move(ri));
    }
    run(std::move(plan), planner);
    return planner.dst;
  }
  dcp::Value value(const std::string& key) {
    KeyPlanner planner;
    dcp::LoadPlan plan;
    dcp::ReadItem ri;
    ri.type = dcp::LoadItemType::kByteIO;
    ri.dest_index = ri.storage_index = dcp::MetadataIndex(key);
    plan.items.push_back(std::move(ri));
    run(std::move(plan), planner);
    if (!planner.got_value)
      throw dcp::CorruptionError("'" + path_ + "' gave no value for key '" + key + "'");
    return planner.value;
  }

 private:
  void run(dcp::LoadPlan plan, KeyPlanner& planner) {
    if (plan.items.empty()) return;
    plan = reader_->prepare_local_plan(std::move(plan));
    plan = std::move(reader_->prepare_global_plan({std::move(plan)}).at(0));
    reader_->read_data(plan, planner).get();
  }

  std::string path_, format_;
  std::shared_ptr<dcp::StorageReader> reader_;
  dcp::Metadata md_;
  std::map<std::string, std::string> unreadable_;
};

// The checksums of a key's items, when both sides have comparable ones:
// dcp++'s own format (the checksum of the bytes as stored, which are the raw
// values), the same chunks, each with an XXH3-64 checksum.
bool checksums_comparable(const Side& a, const Side& b, const std::string& key) {
  if (a.format() != "dcp++" || b.format() != "dcp++") return false;
  std::vector<dcp::MetadataIndex> ia, ib;
  const auto& ea = a.md().state_dict_metadata.at(key);
  const auto& eb = b.md().state_dict_metadata.at(key);
  if (const auto* ta = std::get_if<dcp::TensorStorageMetadata>(&ea)) {
    const auto& tb = std::get<dcp::TensorStorageMetadata>(eb);
    std::set<std::pair<std::vector<int64_t>, std::vector<int64_t>>> ca, cb;
    for (const auto& c : ta->chunks) ca.insert({c.offsets, c.sizes});
    for (const auto& c : tb.chunks) cb.insert({c.offsets, c.sizes});
    if (ca != cb) return false;
    for (const auto& c : ca) ia.emplace_back(key, c.first);
  } else {
    ia.emplace_back(key);
  }
  for (const auto& idx : ia) {
    auto x = a.md().storage_data.find(idx);
    auto y = b.md().storage_data.find(idx);
    if (x == a.md().storage_data.end() || y == b.md().storage_data.end()) return false;
    if (x->second.checksum_type != dcp::ChecksumType::kXXH3_64 ||
        y->second.checksum_type != dcp::ChecksumType::kXXH3_64)
      return false;
  }
  return true;
}

bool checksums_equal(const Side& a, const Side& b, const std::string& key) {
  const auto& sa = a.md().storage_data;
  for (auto it = sa.lower_bound(dcp::MetadataIndex(key)); it != sa.end() && it->first.fqn == key;
       ++it) {
    const auto& info = it->second;
    const auto& other = b.md().storage_data.at(it->first);
    if (other.checksum != info.checksum || other.length != info.length) return false;
  }
  return true;
}

bool bit_equal(const at::Tensor& x, const at::Tensor& y) {
  if (x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes()) return false;
  const at::Tensor cx = x.contiguous(), cy = y.contiguous();
  return std::memcmp(cx.data_ptr(), cy.data_ptr(), cx.nbytes()) == 0;
}

// The largest |x - y| (NaN where only one side is NaN); both the same shape.
double max_abs_diff(const at::Tensor& x, const at::Tensor& y) {
  if (x.numel() == 0) return 0;
  const bool complex = x.is_complex() || y.is_complex();
  const auto as = complex ? at::kComplexDouble : at::kDouble;
  const at::Tensor a = x.to(as), b = y.to(as);
  at::Tensor d = (a - b).abs();
  if (complex) d = d.to(at::kDouble);
  const at::Tensor both_nan = at::isnan(a) & at::isnan(b);
  const at::Tensor same = (a == b) | both_nan;  // equal infinities: inf - inf is NaN
  d = d.masked_fill(same, 0.0);
  if (at::isnan(d).any().item<bool>()) return std::nan("");
  return d.max().item<double>();
}

struct Change {
  std::string key, how, detail;
  bool have_diff = false;
  double diff = 0;
};

}  // namespace

CLI::App* add_diff(CLI::App& app, DiffArgs& a) {
  auto* cmd = app.add_subcommand(
      "diff",
      "compare two checkpoints (any formats dcp++ reads): keys added (in B, not in A), removed and "
      "changed. Two dcp++ checkpoints saved in the same chunks are compared by checksum; "
      "otherwise (sharded differently, PyTorch DCP, torch.save, safetensors) by value. Exit 0: "
      "the same, 1: they differ, 2: an error");
  cmd->add_option("a", a.a, "checkpoint A: a directory or a .pt/.pth/.safetensors file")
      ->required();
  cmd->add_option("b", a.b, "checkpoint B")->required();
  cmd->add_flag("--values", a.values,
                "also read each changed tensor and print the largest absolute difference");
  cmd->add_flag("--json", a.json, "one JSON object: added, removed, changed, unchanged");
  cmd->add_option("--threads", a.threads, "reader threads")->check(CLI::Range(1, 256));
  return cmd;
}

int run_diff(const DiffArgs& args) {
  try {
    Side a(args.a, args.threads), b(args.b, args.threads);
    const auto& ma = a.md().state_dict_metadata;
    const auto& mb = b.md().state_dict_metadata;
    std::vector<std::string> added, removed, unreadable;
    std::vector<Change> changed;
    size_t unchanged = 0, by_checksum = 0, by_value = 0;
    for (const auto& [key, e] : mb)
      if (!ma.count(key)) added.push_back(key);
    for (const auto& [key, ea] : ma) {
      auto it = mb.find(key);
      if (it == mb.end()) {
        removed.push_back(key);
        continue;
      }
      const auto& eb = it->second;
      if (a.unreadable().count(key) || b.unreadable().count(key)) {
        unreadable.push_back(key);
        continue;
      }
      const auto* ta = std::get_if<dcp::TensorStorageMetadata>(&ea);
      const auto* tb = std::get_if<dcp::TensorStorageMetadata>(&eb);
      Change c;
      c.key = key;
      if (!ta != !tb) {
        c.how = "kind";
        c.detail = std::string(ta ? "tensor" : "value") + " -> " + (tb ? "tensor" : "value");
        changed.push_back(std::move(c));
        continue;
      }
      if (ta && ta->size != tb->size) {
        c.how = "shape";
        c.detail = shape_text(ta->size) + " -> " + shape_text(tb->size);
        changed.push_back(std::move(c));
        continue;
      }
      const bool dtype_changed = ta && ta->properties.dtype != tb->properties.dtype;
      if (!dtype_changed && checksums_comparable(a, b, key)) {
        ++by_checksum;
        if (checksums_equal(a, b, key)) {
          ++unchanged;
          continue;
        }
        c.how = "checksum";
        if (args.values && ta) {
          c.diff = max_abs_diff(a.tensor(key), b.tensor(key));
          c.have_diff = true;
        }
        changed.push_back(std::move(c));
        continue;
      }
      ++by_value;
      if (!ta) {
        if (a.value(key).equals(b.value(key))) {
          ++unchanged;
        } else {
          c.how = "value";
          changed.push_back(std::move(c));
        }
        continue;
      }
      const at::Tensor x = a.tensor(key), y = b.tensor(key);
      if (dtype_changed) {
        c.how = "dtype";
        c.detail = std::string(dcp::dtype_name(ta->properties.dtype)) + " -> " +
                   dcp::dtype_name(tb->properties.dtype);
      } else if (bit_equal(x, y)) {
        ++unchanged;
        continue;
      } else {
        c.how = "values";
      }
      if (args.values) {
        c.diff = max_abs_diff(x, y);
        c.have_diff = true;
      }
      changed.push_back(std::move(c));
    }
    const bool differ = !added.empty() || !removed.empty() || !changed.empty();
    if (args.json) {
      nlohmann::ordered_json j;
      j["a"] = {{"path", a.path()}, {"format", a.format()}, {"keys", ma.size()}};
      j["b"] = {{"path", b.path()}, {"format", b.format()}, {"keys", mb.size()}};
      j["added"] = added;
      j["removed"] = removed;
      j["changed"] = nlohmann::ordered_json::array();
      for (const auto& c : changed) {
        nlohmann::ordered_json o;
        o["key"] = c.key;
        o["by"] = c.how;
        if (!c.detail.empty()) o["detail"] = c.detail;
        if (c.have_diff)
          o["max_abs_diff"] =
              std::isnan(c.diff) ? nlohmann::ordered_json("nan") : nlohmann::ordered_json(c.diff);
        j["changed"].push_back(std::move(o));
      }
      j["unchanged"] = unchanged;
      j["compared_by_checksum"] = by_checksum;
      j["compared_by_value"] = by_value;
      j["not_compared"] = unreadable;
      std::printf("%s\n", j.dump(2).c_str());
      return differ ? 1 : 0;
    }
    std::printf("A: %s (%s, %zu keys)\nB: %s (%s, %zu keys)\n", a.path().c_str(),
                a.format().c_str(), ma.size(), b.path().c_str(), b.format().c_str(), mb.size());
    for (const auto& k : added) std::printf("added    %s\n", k.c_str());
    for (const auto& k : removed) std::printf("removed  %s\n", k.c_str());
    for (const auto& c : changed) {
      std::string line = "changed  " + c.key + "  (" + c.how;
      if (!c.detail.empty()) line += ": " + c.detail;
      line += ")";
      if (c.have_diff) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "  max |a-b| = %.6g", c.diff);
        line += buf;
      }
      std::printf("%s\n", line.c_str());
    }
    for (const auto& k : unreadable)
      std::printf("not compared  %s (a value dcp++ cannot read)\n", k.c_str());
    std::printf(
        "%zu added, %zu removed, %zu changed, %zu unchanged (%zu compared by checksum, %zu "
        "by value)\n",
        added.size(), removed.size(), changed.size(), unchanged, by_checksum, by_value);
    return differ ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt: %s\n", e.what());
    return 2;
  }
}

}  // namespace ckpt
