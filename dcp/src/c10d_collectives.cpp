// Collectives over a c10d ProcessGroup. Byte strings travel as uint8
// tensors: the longest length is agreed first (allreduce MAX), then every
// payload is sent padded to it with its real length in the first 8 bytes.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <ATen/ATen.h>

#include <c10/util/Exception.h>

#include <cstdio>
#include <cstring>

#include "dcp/collectives.h"
#include "dcp/error.h"

namespace dcp {

namespace {

constexpr size_t kLenBytes = 8;

class ProcessGroupCollectives final : public Collectives {
 public:
  ProcessGroupCollectives(c10::intrusive_ptr<c10d::ProcessGroup> pg,
                          std::chrono::milliseconds timeout)
      : pg_(std::move(pg)), timeout_(timeout) {
    if (!pg_) throw InvalidArgumentError("make_process_group_collectives: null process group");
  }

  int rank() const override { return pg_->getRank(); }
  int world_size() const override { return pg_->getSize(); }

  std::vector<std::string> gather(const std::string& mine, int root) override {
    check_root(root);
    const int64_t width = agree_width(mine.size());
    std::vector<at::Tensor> input{pack(mine, width)};
    std::vector<std::vector<at::Tensor>> output(1);
    if (rank() == root)
      for (int r = 0; r < world_size(); ++r) output[0].push_back(at::empty({width}, at::kByte));
    c10d::GatherOptions opts;
    opts.rootRank = root;
    opts.timeout = timeout_;
    if (rank() != root) output.clear();
    wait(pg_->gather(output, input, opts), "gather");
    std::vector<std::string> all;
    if (rank() == root)
      for (auto& t : output[0]) all.push_back(unpack(t, "gather"));
    return all;
  }

  std::string scatter(const std::vector<std::string>& parts, int root) override {
    check_root(root);
    size_t longest = 0;
    if (rank() == root) {
      if (parts.size() != static_cast<size_t>(world_size()))
        throw Error(ErrorCode::kInternal, "scatter: " + std::to_string(parts.size()) +
                                              " parts for " + std::to_string(world_size()) +
                                              " ranks");
      for (const auto& p : parts) longest = std::max(longest, p.size());
    }
    const int64_t width = agree_width(longest);
    std::vector<at::Tensor> output{at::empty({width}, at::kByte)};
    std::vector<std::vector<at::Tensor>> input;
    if (rank() == root) {
      input.emplace_back();
      for (const auto& p : parts) input[0].push_back(pack(p, width));
    }
    c10d::ScatterOptions opts;
    opts.rootRank = root;
    opts.timeout = timeout_;
    wait(pg_->scatter(output, input, opts), "scatter");
    return unpack(output[0], "scatter");
  }

  std::string broadcast(const std::string& data, int root) override {
    check_root(root);
    const int64_t width = agree_width(rank() == root ? data.size() : 0);
    std::vector<at::Tensor> t{rank() == root ? pack(data, width) : at::empty({width}, at::kByte)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = timeout_;
    wait(pg_->broadcast(t, opts), "broadcast");
    return unpack(t[0], "broadcast");
  }

  void barrier() override {
    c10d::BarrierOptions opts;
    opts.timeout = timeout_;
    wait(pg_->barrier(opts), "barrier");
  }

 private:
  void check_root(int root) const {
    if (root < 0 || root >= world_size())
      throw InvalidArgumentError("coordinator rank " + std::to_string(root) +
                                 " is outside the process group of " +
                                 std::to_string(world_size()) + " ranks");
  }

  // The longest payload of all ranks, plus the length prefix.
  int64_t agree_width(size_t mine) {
    std::vector<at::Tensor> t{at::full({1}, static_cast<int64_t>(mine), at::kLong)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::MAX;
    opts.timeout = timeout_;
    wait(pg_->allreduce(t, opts), "allreduce");
    return t[0].item<int64_t>() + static_cast<int64_t>(kLenBytes);
  }

  static at::Tensor pack(const std::string& s, int64_t width) {
    at::Tensor t = at::zeros({width}, at::kByte);
    const uint64_t n = s.size();
    auto* p = t.data_ptr<uint8_t>();
    std::memcpy(p, &n, kLenBytes);
    std::memcpy(p + kLenBytes, s.data(), s.size());
    return t;
  }

  static std::string unpack(const at::Tensor& t, const char* op) {
    const auto* p = t.data_ptr<uint8_t>();
    uint64_t n;
    std::memcpy(&n, p, kLenBytes);
    if (n + kLenBytes > static_cast<uint64_t>(t.numel()))
      throw Error(ErrorCode::kInternal, std::string(op) + ": malformed payload length");
    return std::string(reinterpret_cast<const char*>(p + kLenBytes), n);
  }

  // Waits for one operation. Every failure of a collective is classified
  // here, and only here. Gloo 1.13 throws one exception type whether a peer
  // closed its connection or did not answer in time, so the time it took
  // tells them apart: an error well before the timeout is a peer that is
  // gone (it exited or crashed: the kernel closed its sockets), one at the
  // timeout is a peer that hangs (or is stuck in another step).
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* op) {
    const auto start = std::chrono::steady_clock::now();
    try {
      work->wait(timeout_);
    } catch (const std::exception& e) {
      const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - start);
      std::string what = e.what();
      if (const auto* c10e = dynamic_cast<const c10::Error*>(&e))
        what = c10e->what_without_backtrace();
      what = what.substr(0, what.find('\n'));
      const std::string where = std::string("collective ") + op + " on rank " +
                                std::to_string(rank()) + " of " + std::to_string(world_size());
      if (elapsed >= timeout_ * 9 / 10)
        throw TimeoutError(where + ": no answer within the timeout of " + ms_text(timeout_) +
                           " (a peer rank hangs, or is in another step): " + what);
      throw PeerLostError(where + ": a peer's connection closed after " + ms_text(elapsed) +
                          ", before the timeout of " + ms_text(timeout_) +
                          " (a rank exited or crashed): " + what);
    }
  }

  static std::string ms_text(std::chrono::milliseconds ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", ms.count() / 1000.0);
    return buf;
  }

  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::shared_ptr<Collectives> make_process_group_collectives(
    c10::intrusive_ptr<c10d::ProcessGroup> process_group, std::chrono::milliseconds timeout) {
  return std::make_shared<ProcessGroupCollectives>(std::move(process_group), timeout);
}

}  // namespace dcp
