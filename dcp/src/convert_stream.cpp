// dcp::convert's reading side: the source checkpoint read in boxes through
// the load path, the two-buffer pipeline, progress, and the output file.
#include <sys/mman.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "chunk_validation.h"
#include "convert_internal.h"
#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/planner.h"
#include "dcp/thread_annotations.h"
#include "sequential_reads.h"

namespace dcp {
namespace internal {
namespace convert {

namespace {

uint64_t volume(const std::vector<int64_t>& sizes) {
  uint64_t n = 1;
  for (int64_t s : sizes) n *= static_cast<uint64_t>(std::max<int64_t>(s, 0));
  return n;
}

uint64_t align64(uint64_t n) { return (n + 63) & ~uint64_t{63}; }

}  // namespace

uint64_t OutTensor::numel() const { return volume(sizes); }
uint64_t OutTensor::in_bytes() const { return numel() * c10::elementSize(in_dtype); }
uint64_t OutTensor::out_bytes() const { return numel() * c10::elementSize(out_dtype); }
uint64_t Box::numel() const { return volume(sizes); }

std::vector<Box> windows_of(const std::vector<int64_t>& sizes, uint64_t elem, uint64_t cap) {
  const size_t n = sizes.size();
  if (n == 0 || volume(sizes) == 0) return {Box{std::vector<int64_t>(n, 0), sizes}};
  std::vector<Box> out;
  std::vector<int64_t> prefix;
  // Boxes with the indices `prefix` fixed in the leading dimensions, over dimension d.
  std::function<void(size_t)> split = [&](size_t d) {
    const uint64_t row = volume(std::vector<int64_t>(sizes.begin() + d + 1, sizes.end())) * elem;
    if (row <= cap || d + 1 == n) {
      const int64_t per =
          static_cast<int64_t>(std::max<uint64_t>(1, cap / std::max<uint64_t>(row, 1)));
      for (int64_t r = 0; r < sizes[d]; r += per) {
        Box b;
        b.offsets = prefix;
        b.offsets.push_back(r);
        b.offsets.resize(n, 0);
        b.sizes.assign(d, 1);
        b.sizes.push_back(std::min(per, sizes[d] - r));
        b.sizes.insert(b.sizes.end(), sizes.begin() + d + 1, sizes.end());
        out.push_back(std::move(b));
      }
      return;
    }
    for (int64_t i = 0; i < sizes[d]; ++i) {
      prefix.push_back(i);
      split(d + 1);
      prefix.pop_back();
    }
  };
  split(0);
  return out;
}

// ---------------------------------------------------------------------------
// Source

namespace {

// Hands the readers the destinations of a list of pieces: a read item's
// dest_index.index is the piece's position; plain values are decoded.
class PiecePlanner final : public LoadPlanner {
 public:
  const std::vector<ReadPiece>* pieces = nullptr;
  std::map<std::string, Value>* values = nullptr;

  void set_up_planner(StateDict&, const Metadata&, bool) override {}
  LoadPlan create_local_plan() override { return {}; }
  std::vector<LoadPlan> create_global_plan(std::vector<LoadPlan> plans) override { return plans; }
  LoadPlan finish_plan(LoadPlan plan) override { return plan; }
  void load_bytes(const ReadItem& item, const Bytes& value) override {
    (*values)[item.dest_index.fqn] =
        decode_plain_value(value.data, "key '" + item.dest_index.fqn + "'");
  }
  at::Tensor resolve_tensor(const ReadItem& item) override {
    at::Tensor v = (*pieces)[static_cast<size_t>(item.dest_index.index)].dst;
    for (size_t d = 0; d < item.lengths.size(); ++d)
      if (item.dest_offsets[d] != 0 || item.lengths[d] != v.size(static_cast<int64_t>(d)))
        v = v.narrow(static_cast<int64_t>(d), item.dest_offsets[d], item.lengths[d]);
    return v;
  }
  void commit_tensor(const ReadItem&, at::Tensor&) override {}
};

}  // namespace

Source::Source(const std::string& path, const ConvertOptions& options) : path_(path) {
  FileSystemReaderOptions ro;
  ro.env = options.env;
  ro.threads = std::max(1, options.threads);
  ro.verify_checksums = options.verify_checksums;
  reader_ = make_filesystem_reader(path, ro);
  md_ = reader_->read_metadata();
  reader_->set_up_storage_reader(md_, /*is_coordinator=*/true);
  unreadable_ = reader_->unreadable_keys();
  if (SequentialReads* s = sequential_reads(*reader_)) {
    s->begin_sequential_reads();
    sequential_ = true;
  }
}

Source::~Source() = default;

std::map<std::string, Value> Source::read_values(const std::vector<std::string>& keys) {
  std::map<std::string, Value> values;
  if (keys.empty()) return values;
  LoadPlan plan;
  for (const std::string& key : keys) {
    ReadItem ri;
    ri.type = LoadItemType::kByteIO;
    ri.dest_index = ri.storage_index = MetadataIndex(key);
    plan.items.push_back(std::move(ri));
  }
  PiecePlanner planner;
  planner.values = &values;
  plan = reader_->prepare_local_plan(std::move(plan));
  plan = std::move(reader_->prepare_global_plan({std::move(plan)}).at(0));
  reader_->read_data(plan, planner).get();
  for (const std::string& key : keys)
    if (!values.count(key))
      throw CorruptionError("'" + path_ + "' gave no value for key '" + key + "'");
  return values;
}

void Source::read(const std::vector<ReadPiece>& pieces) {
  LoadPlan plan;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const ReadPiece& p = pieces[i];
    const OutTensor& t = *p.tensor;
    if (t.made.defined()) {
      at::Tensor src = t.made;
      for (size_t d = 0; d < p.box.sizes.size(); ++d)
        src = src.narrow(static_cast<int64_t>(d), p.box.offsets[d], p.box.sizes[d]);
      p.dst.copy_(src);
      continue;
    }
    if (p.box.numel() == 0) continue;
    const size_t n = t.sizes.size();
    uint64_t covered = 0;
    for (const ChunkStorageMetadata& c : t.saved->chunks) {
      if (c.offsets.size() != n || c.sizes.size() != n)
        throw CorruptionError("the metadata of '" + path_ + "' has a chunk of key '" + t.key +
                              "' at " + shape_str(c.offsets) + " that does not match its shape " +
                              shape_str(t.sizes));
      ReadItem ri;
      ri.type = LoadItemType::kTensor;
      ri.dest_offsets.resize(n);
      ri.storage_offsets.resize(n);
      ri.lengths.resize(n);
      bool empty = false;
      for (size_t d = 0; d < n && !empty; ++d) {
        const int64_t lo = std::max(p.box.offsets[d], c.offsets[d]);
        const int64_t hi = std::min(p.box.offsets[d] + p.box.sizes[d], c.offsets[d] + c.sizes[d]);
        empty = lo >= hi;
        ri.dest_offsets[d] = lo - p.box.offsets[d];
        ri.storage_offsets[d] = lo - c.offsets[d];
        ri.lengths[d] = hi - lo;
      }
      if (empty) continue;
      covered += volume(ri.lengths);
      ri.dest_index = MetadataIndex(t.key, p.box.offsets, static_cast<int64_t>(i));
      ri.storage_index = MetadataIndex(t.key, c.offsets);
      plan.items.push_back(std::move(ri));
    }
    if (covered != p.box.numel())
      throw CorruptionError("the saved chunks of key '" + t.key + "' in '" + path_ +
                            "' do not cover the box at " + shape_str(p.box.offsets) + " of size " +
                            shape_str(p.box.sizes) + " (" + std::to_string(covered) + " of " +
                            std::to_string(p.box.numel()) + " elements)");
  }
  if (plan.items.empty()) return;
  PiecePlanner planner;
  planner.pieces = &pieces;
  plan = reader_->prepare_local_plan(std::move(plan));
  plan = std::move(reader_->prepare_global_plan({std::move(plan)}).at(0));
  reader_->read_data(plan, planner).get();
}

void Source::finish() {
  if (!sequential_) return;
  sequential_ = false;
  if (SequentialReads* s = sequential_reads(*reader_)) s->finish_sequential_reads();
}

// ---------------------------------------------------------------------------
// Progress

struct Progress::State {
  Mutex mu;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last DCP_GUARDED_BY(mu) = start;
  uint64_t bytes DCP_GUARDED_BY(mu) = 0;
};

Progress::Progress(std::function<void(const ConvertProgress&)> fn, uint64_t total)
    : fn_(std::move(fn)), total_(total), state_(std::make_shared<State>()) {}

void Progress::add(uint64_t bytes) {
  MutexLock lock(state_->mu);
  state_->bytes += bytes;
  if (!fn_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - state_->last < std::chrono::milliseconds(100)) return;
  state_->last = now;
  fn_(ConvertProgress{state_->bytes, total_,
                      std::chrono::duration<double>(now - state_->start).count()});
}

void Progress::done() {
  MutexLock lock(state_->mu);
  if (!fn_) return;
  const auto now = std::chrono::steady_clock::now();
  fn_(ConvertProgress{state_->bytes, total_,
                      std::chrono::duration<double>(now - state_->start).count()});
}

uint64_t Progress::bytes() const {
  MutexLock lock(state_->mu);
  return state_->bytes;
}

// ---------------------------------------------------------------------------
// The pipeline

namespace {

// Memory for a buffer, faulted in at once (MAP_POPULATE): first touch of
// fresh pages is slower than the copies that fill them.
class MappedBuffer {
 public:
  explicit MappedBuffer(size_t n) : n_(std::max<size_t>(n, 64)) {
    void* p = mmap(nullptr, n_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    p_ = static_cast<char*>(p);
  }
  ~MappedBuffer() { munmap(p_, n_); }
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;
  char* data() const { return p_; }

 private:
  size_t n_;
  char* p_;
};

struct Slot {
  std::unique_ptr<MappedBuffer> in, out;
  uint64_t used_in = 0, used_out = 0;
  std::vector<ReadPiece> pieces;
  struct Out {
    size_t tensor;
    uint64_t offset;
    const char* data;
    size_t n;
  };
  std::vector<Out> outs;
  void clear() {
    used_in = used_out = 0;
    pieces.clear();
    outs.clear();
  }
};

}  // namespace

void stream(Source& source, const std::vector<OutTensor>& tensors, const std::vector<size_t>& order,
            uint64_t cap, const PieceSink& sink, Progress& progress) {
  cap = std::max<uint64_t>(cap, 4096);
  bool convert = false;
  for (size_t i : order) convert = convert || tensors[i].in_dtype != tensors[i].out_dtype;
  Slot slots[2];
  for (Slot& s : slots) {
    s.in = std::make_unique<MappedBuffer>(cap);
    if (convert) s.out = std::make_unique<MappedBuffer>(cap);
  }

  Mutex mu;
  CondVar cv;
  std::deque<Slot*> free_slots{&slots[0], &slots[1]}, full;
  bool finished = false;  // the reader is done (or failed)
  bool failed = false;
  std::exception_ptr write_error;

  std::thread writer([&] {
    for (;;) {
      Slot* s;
      {
        MutexLock lock(mu);
        while (full.empty() && !finished) cv.wait(mu);
        if (full.empty()) return;
        s = full.front();
        full.pop_front();
      }
      try {
        for (const Slot::Out& o : s->outs) {
          sink(o.tensor, o.offset, o.data, o.n);
          progress.add(o.n);
        }
      } catch (...) {
        MutexLock lock(mu);
        write_error = std::current_exception();
        failed = true;
        cv.notify_all();
        return;
      }
      MutexLock lock(mu);
      s->clear();
      free_slots.push_back(s);
      cv.notify_all();
    }
  });

  auto acquire = [&]() -> Slot* {
    MutexLock lock(mu);
    while (free_slots.empty() && !failed) cv.wait(mu);
    if (failed) return nullptr;
    Slot* s = free_slots.front();
    free_slots.pop_front();
    return s;
  };
  auto submit = [&](Slot* s) {
    source.read(s->pieces);
    for (size_t i = 0; i < s->pieces.size(); ++i) {
      const ReadPiece& p = s->pieces[i];
      Slot::Out& o = s->outs[i];
      if (p.tensor->in_dtype != p.tensor->out_dtype) {
        at::Tensor out = at::from_blob(const_cast<char*>(o.data), p.box.sizes,
                                       at::TensorOptions().dtype(p.tensor->out_dtype));
        out.copy_(p.dst);
      }
    }
    MutexLock lock(mu);
    full.push_back(s);
    cv.notify_all();
  };

  std::exception_ptr read_error;
  try {
    Slot* s = acquire();
    for (size_t ti : order) {
      if (!s) break;
      const OutTensor& t = tensors[ti];
      const uint64_t ein = c10::elementSize(t.in_dtype), eout = c10::elementSize(t.out_dtype);
      uint64_t offset = 0;
      for (Box& box : windows_of(t.sizes, std::max(ein, eout), cap)) {
        const uint64_t bin = box.numel() * ein, bout = box.numel() * eout;
        const bool conv = t.in_dtype != t.out_dtype;
        if (!s->pieces.empty() && (s->used_in + bin > cap || (conv && s->used_out + bout > cap))) {
          submit(s);
          s = acquire();
          if (!s) break;
        }
        char* in = s->in->data() + s->used_in;
        s->used_in = std::min(cap, align64(s->used_in + bin));
        const char* data = in;
        if (conv) {
          data = s->out->data() + s->used_out;
          s->used_out = std::min(cap, align64(s->used_out + bout));
        }
        at::Tensor dst = at::from_blob(in, box.sizes, at::TensorOptions().dtype(t.in_dtype));
        s->pieces.push_back(ReadPiece{&t, std::move(box), std::move(dst)});
        s->outs.push_back(Slot::Out{ti, offset, data, static_cast<size_t>(bout)});
        offset += bout;
      }
    }
    if (s && !s->pieces.empty()) {
      submit(s);
    } else if (s) {
      MutexLock lock(mu);
      free_slots.push_back(s);
    }
  } catch (...) {
    read_error = std::current_exception();
  }
  {
    MutexLock lock(mu);
    finished = true;
    if (read_error) full.clear();  // nothing more is written
    cv.notify_all();
  }
  writer.join();
  if (read_error) std::rethrow_exception(read_error);
  if (write_error) std::rethrow_exception(write_error);
}

// ---------------------------------------------------------------------------
// FileSink

namespace {
constexpr size_t kSinkBuffer = size_t{1} << 20;
constexpr uint64_t kWritebackBytes = uint64_t{64} << 20;
}  // namespace

FileSink::FileSink(Env& env, const std::string& path, bool sync)
    : file_(env.new_writable_file(path)), sync_(sync), buf_(new char[kSinkBuffer]) {}

FileSink::~FileSink() = default;

void FileSink::write(const void* data, size_t n) {
  if (n >= kSinkBuffer / 4) {
    flush();
    put(data, n);
    return;
  }
  if (used_ + n > kSinkBuffer) flush();
  std::memcpy(buf_.get() + used_, data, n);
  used_ += n;
}

void FileSink::flush() {
  if (!used_) return;
  const size_t n = used_;
  used_ = 0;
  put(buf_.get(), n);
}

void FileSink::put(const void* data, size_t n) {
  file_->append(data, n);
  size_ += n;
  since_hint_ += n;
  if (sync_ && since_hint_ >= kWritebackBytes) {
    file_->start_writeback();
    since_hint_ = 0;
  }
}

void FileSink::finish() {
  flush();
  if (sync_) file_->sync();
  file_->close();
}

}  // namespace convert
}  // namespace internal
}  // namespace dcp
