// The parts of ckpt that look at a run directory (ls, stats) and compare
// two checkpoints (diff): run_dir.cpp, stats.cpp, diff.cpp. Each adds its
// subcommand to the app and runs it.
#pragma once

#include <CLI/CLI.hpp>

#include <ATen/ATen.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "dcp/dcp.h"
#include "dcp/thread_annotations.h"

namespace ckpt {

// "67.5 KiB"
std::string human_bytes(uint64_t bytes);

// Plans a read of every saved item into a throw-away buffer: the reader
// checks each checksum as it goes, and nothing is kept (ckpt verify, ckpt ls --verify).
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
    done(value.data.size());
  }
  at::Tensor resolve_tensor(const dcp::ReadItem& item) override {
    const auto& t = std::get<dcp::TensorStorageMetadata>(
        metadata_->state_dict_metadata.at(item.dest_index.fqn));
    return at::empty(item.lengths, at::TensorOptions().dtype(t.properties.dtype));
  }
  void commit_tensor(const dcp::ReadItem&, at::Tensor& t) override { done(t.nbytes()); }

  // On a terminal (stderr), a line of progress once a verify has run for a
  // second: bytes checked of all, and the rate. Ends it with a newline.
  void show_progress(uint64_t total) {
    if (isatty(STDERR_FILENO) != 1) return;
    dcp::MutexLock lock(mu_);
    total_ = total;
    t0_ = std::chrono::steady_clock::now();
    last_ = t0_;
    tty_ = true;
  }
  void end_progress() {
    dcp::MutexLock lock(mu_);
    if (shown_) std::fprintf(stderr, "\n");
    shown_ = false;
  }

 private:
  void done(uint64_t bytes) {
    if (!tty_) return;
    dcp::MutexLock lock(mu_);  // reader threads call in
    done_ += bytes;
    const auto now = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(now - t0_).count();
    if (secs < 1 || now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    std::fprintf(stderr, "\rckpt verify: %s of %s (%.0f%%), %s/s\x1b[K", human_bytes(done_).c_str(),
                 human_bytes(total_).c_str(), total_ ? 100.0 * done_ / total_ : 100.0,
                 human_bytes(static_cast<uint64_t>(done_ / secs)).c_str());
    shown_ = true;
  }

  bool tty_ = false;  // set before the reader threads start
  dcp::Mutex mu_;
  bool shown_ DCP_GUARDED_BY(mu_) = false;
  uint64_t done_ DCP_GUARDED_BY(mu_) = 0;
  uint64_t total_ = 0;                        // set before the reader threads start
  std::chrono::steady_clock::time_point t0_;  // likewise
  std::chrono::steady_clock::time_point last_ DCP_GUARDED_BY(mu_);
  std::shared_ptr<dcp::StorageReader> reader_;
  std::map<std::string, std::string> unreadable_;
};

// Local time, "2026-12-02 18:53:08"; "-" for 0.
std::string local_time(double epoch_seconds);

struct LsArgs {
  std::string dir;
  bool json = false, verify = false;
  int threads = 2;
};
CLI::App* add_ls(CLI::App& app, LsArgs& a);
int run_ls(const LsArgs& a);

struct StatsArgs {
  std::string dir;
  bool json = false;
};
CLI::App* add_stats(CLI::App& app, StatsArgs& a);
int run_stats(const StatsArgs& a);

struct DiffArgs {
  std::string a, b;
  bool values = false, json = false;
  int threads = 2;
};
CLI::App* add_diff(CLI::App& app, DiffArgs& a);
int run_diff(const DiffArgs& a);  // 0: the same, 1: they differ, 2: trouble

}  // namespace ckpt
