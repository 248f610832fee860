#include "dcp/async_save.h"

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <ATen/ATen.h>

#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "dcp/error.h"
#include "dcp/logging.h"
#include "dist.h"
#include "resolve.h"
#include "staged_checksums.h"
#include "xxh3.h"

namespace dcp {

using namespace internal;

// ---------------------------------------------------------------------------
// Checksums taken during the staging copy (staged_checksums.h)

namespace internal {
namespace {
struct StagedChecksums {
  Mutex mu;
  std::unordered_map<const void*, std::pair<size_t, uint64_t>> by_ptr DCP_GUARDED_BY(mu);
  // by_ptr.size(), read without the lock: with no stager taking checksums
  // (the default) a write looks up nothing.
  std::atomic<size_t> entries{0};
};
StagedChecksums& staged() {
  static StagedChecksums* s = new StagedChecksums();  // never destroyed: safe at exit
  return *s;
}
}  // namespace

bool staged_checksum(const void* data, size_t n, uint64_t* checksum) {
  StagedChecksums& s = staged();
  if (s.entries.load(std::memory_order_acquire) == 0) return false;
  MutexLock lock(s.mu);
  auto it = s.by_ptr.find(data);
  if (it == s.by_ptr.end() || it->second.first != n) return false;
  *checksum = it->second.second;
  return true;
}
}  // namespace internal

// ---------------------------------------------------------------------------
// The default stager

namespace {

constexpr int64_t kPieceBytes = int64_t{32} << 20;
// Buffers of this size and more are mappings of their own (page-aligned,
// huge pages advised, populated at allocation); smaller ones come from the
// CPU allocator.
constexpr size_t kMappedBytes = size_t{1} << 20;
constexpr size_t kHugePage = size_t{2} << 20;
// Tensors up to this size are copied whole by one thread, in 4 MiB steps
// each hashed (XXH3-64) while it is in cache; larger ones are split over the
// threads and the writer hashes them.
constexpr size_t kFoldMaxBytes = size_t{64} << 20;
constexpr size_t kFoldStepBytes = size_t{4} << 20;

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Faults in [p, p + n) for writing: MADV_POPULATE_WRITE where the kernel has
// it (one call, no fault per page), else one write per page.
void populate(char* p, size_t n) {
  if (n == 0) return;
  if (::madvise(p, n, MADV_POPULATE_WRITE) == 0) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  for (size_t off = 0; off < n; off += page) p[off] = 0;
  p[n - 1] = 0;
}

// The length of the mapping of a staging buffer of `bytes`: with huge pages,
// whole ones, so that the tail gets one too.
size_t mapped_length(size_t bytes, bool huge_pages) {
  return huge_pages && bytes >= kHugePage ? (bytes + kHugePage - 1) / kHugePage * kHugePage : bytes;
}

// An uninitialised CPU tensor for staging `src`, not yet faulted in (see
// make_default_stager()); `fresh` receives the memory to populate.
at::Tensor new_staging_buffer(const at::Tensor& src, bool huge_pages,
                              std::vector<std::pair<char*, size_t>>& fresh) {
  auto options = at::TensorOptions().dtype(src.scalar_type()).device(at::kCPU);
  if (at::hasCUDA()) return at::empty(src.sizes(), options.pinned_memory(true));
  const size_t bytes = static_cast<size_t>(src.numel()) * src.element_size();
  if (bytes >= kMappedBytes) {
    const size_t len = mapped_length(bytes, huge_pages);
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
#ifdef MADV_HUGEPAGE
      if (huge_pages && len >= kHugePage) ::madvise(p, len, MADV_HUGEPAGE);  // a hint
#endif
      fresh.emplace_back(static_cast<char*>(p), len);
      return at::from_blob(
          p, src.sizes(), [len](void* q) { ::munmap(q, len); }, options);
    }
    // No mapping (the limit of mappings): the allocator's memory will do.
  }
  at::Tensor t = at::empty(src.sizes(), options);
  fresh.emplace_back(static_cast<char*>(t.data_ptr()), bytes);
  return t;
}

class DefaultStager final : public Stager {
 public:
  explicit DefaultStager(StagerOptions opt) : opt_(opt) {
    if (opt_.threads < 1) throw InvalidArgumentError("StagerOptions.threads must be >= 1");
  }

  StateDict stage(const StateDict& state_dict) override {
    std::map<std::string, at::Tensor> used;
    std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (source, staging buffer)
    StateDict out;
    for (const auto& [k, v] : state_dict) out.emplace(k, stage_value(v, k, used, &copies));
    // Buffers of tensors that are gone are freed; the rest wait for the next save.
    buffers_ = std::move(used);
    populate_fresh();
    copy_all(copies);
    return out;
  }

  ~DefaultStager() override { unregister(); }

  void release() override { unregister(); }

  void reserve(const StateDict& state_dict) override {
    std::map<std::string, at::Tensor> used;
    for (const auto& [k, v] : state_dict) stage_value(v, k, used, nullptr);
    buffers_ = std::move(used);
    populate_fresh();
  }

 private:
  at::Tensor buffer_for(const std::string& key, const at::Tensor& src,
                        std::map<std::string, at::Tensor>& used) {
    auto it = buffers_.find(key);
    at::Tensor buf;
    if (it != buffers_.end() && it->second.scalar_type() == src.scalar_type() &&
        it->second.sizes() == src.sizes()) {
      buf = it->second;
    } else {
      buf = new_staging_buffer(src, opt_.huge_pages, fresh_);
    }
    used[key] = buf;
    return buf;
  }

  Value stage_value(const Value& v, const std::string& key, std::map<std::string, at::Tensor>& used,
                    std::vector<std::pair<at::Tensor, at::Tensor>>* copies) {
    switch (v.kind()) {
      case Value::Kind::kTensor: {
        const at::Tensor& t = v.tensor();
        if (!t.defined()) return v;
        at::Tensor buf = buffer_for(key, t, used);
        if (copies) copies->emplace_back(t, buf);
        return buf;
      }
      case Value::Kind::kSharded: {
        ShardedTensor st{v.sharded().global_size, {}};
        for (const Shard& s : v.sharded().local_shards) {
          std::string k = key + "#";
          for (int64_t o : s.offsets) k += std::to_string(o) + ",";
          at::Tensor buf = s.tensor.defined() ? buffer_for(k, s.tensor, used) : s.tensor;
          if (s.tensor.defined() && copies) copies->emplace_back(s.tensor, buf);
          st.local_shards.push_back(Shard{buf, s.offsets});
        }
        return st;
      }
      case Value::Kind::kDict: {
        Dict d;
        for (const auto& [k, e] : v.dict())
          d.emplace(k, stage_value(e, key + "." + k, used, copies));
        return d;
      }
      case Value::Kind::kList: {
        List l;
        for (size_t i = 0; i < v.list().size(); ++i)
          l.push_back(stage_value(v.list()[i], key + "." + std::to_string(i), used, copies));
        return l;
      }
      case Value::Kind::kStateful:
        throw InvalidArgumentError("key '" + key +
                                   "': Stateful objects must be resolved before staging");
      default:
        return v;  // plain values are copied with the Value
    }
  }

  // Copies every source into its buffer: contiguous CPU tensors by memcpy in
  // pieces spread over the threads, the rest with copy_().
  void copy_all(const std::vector<std::pair<at::Tensor, at::Tensor>>& copies) {
    struct Piece {
      size_t copy;
      int64_t begin, end;  // byte range; end < 0: the whole tensor via copy_()
      bool hash;           // the whole tensor, hashed as it is copied
    };
    std::vector<Piece> pieces;
    std::vector<uint64_t> hashes(copies.size());
    for (size_t i = 0; i < copies.size(); ++i) {
      const at::Tensor& src = copies[i].first;
      if (src.device().is_cpu() && src.is_contiguous()) {
        const int64_t n = static_cast<int64_t>(src.nbytes());
        if (opt_.checksums && n > 0 && static_cast<size_t>(n) <= kFoldMaxBytes) {
          pieces.push_back({i, 0, n, true});
          continue;
        }
        for (int64_t b = 0; b < n; b += kPieceBytes)
          pieces.push_back({i, b, std::min(n, b + kPieceBytes), false});
      } else {
        pieces.push_back({i, 0, -1, false});
      }
    }
    auto body = [&](size_t p) {
      at::NoGradGuard no_grad;
      const Piece& piece = pieces[p];
      const auto& [src, dst] = copies[piece.copy];
      if (piece.end < 0) {
        dst.copy_(src);
      } else if (piece.hash) {
        char* d = static_cast<char*>(dst.data_ptr());
        const char* s = static_cast<const char*>(src.data_ptr());
        const size_t n = static_cast<size_t>(piece.end);
        Xxh3 state;
        for (size_t b = 0; b < n; b += kFoldStepBytes) {
          const size_t len = std::min(kFoldStepBytes, n - b);
          std::memcpy(d + b, s + b, len);
          state.update(d + b, len);  // what the file will hold
        }
        hashes[piece.copy] = state.digest();
      } else {
        std::memcpy(static_cast<char*>(dst.data_ptr()) + piece.begin,
                    static_cast<const char*>(src.data_ptr()) + piece.begin,
                    static_cast<size_t>(piece.end - piece.begin));
      }
    };
    if (opt_.threads == 1 || pieces.size() <= 1) {
      for (size_t p = 0; p < pieces.size(); ++p) body(p);
    } else {
      tbb::task_arena arena(opt_.threads);
      arena.execute([&] {
        tbb::parallel_for(tbb::blocked_range<size_t>(0, pieces.size(), 1),
                          [&](const tbb::blocked_range<size_t>& r) {
                            for (size_t p = r.begin(); p != r.end(); ++p) body(p);
                          });
      });
    }
    // Only after every copy is done: the writer may look them up from now on.
    internal::StagedChecksums& reg = internal::staged();
    MutexLock lock(reg.mu);
    for (const Piece& piece : pieces)
      if (piece.hash) {
        const void* p = copies[piece.copy].second.data_ptr();
        reg.by_ptr[p] = {static_cast<size_t>(piece.end), hashes[piece.copy]};
        registered_.push_back(p);
      }
    reg.entries.store(reg.by_ptr.size(), std::memory_order_release);
  }

  // Forgets the checksums of the last stage(): its buffers may change now.
  void unregister() {
    if (registered_.empty()) return;
    internal::StagedChecksums& reg = internal::staged();
    MutexLock lock(reg.mu);
    for (const void* p : registered_) reg.by_ptr.erase(p);
    reg.entries.store(reg.by_ptr.size(), std::memory_order_release);
    registered_.clear();
  }

  // Faults in the buffers allocated since the last call, in pieces over the
  // threads (page faults cost more than the copy on fresh memory).
  void populate_fresh() {
    std::vector<std::pair<char*, size_t>> pieces;
    for (const auto& [p, n] : fresh_)
      for (size_t b = 0; b < n; b += static_cast<size_t>(kPieceBytes))
        pieces.emplace_back(p + b, std::min(n - b, static_cast<size_t>(kPieceBytes)));
    fresh_.clear();
    if (opt_.threads == 1 || pieces.size() <= 1) {
      for (const auto& [p, n] : pieces) populate(p, n);
      return;
    }
    tbb::task_arena arena(opt_.threads);
    arena.execute([&] {
      tbb::parallel_for(size_t{0}, pieces.size(),
                        [&](size_t i) { populate(pieces[i].first, pieces[i].second); });
    });
  }

  const StagerOptions opt_;
  std::vector<std::pair<char*, size_t>> fresh_;  // allocated, not yet populated
  std::vector<const void*> registered_;          // buffers with a staged checksum
  std::map<std::string, at::Tensor> buffers_;    // key -> staging buffer of the last stage()
};

}  // namespace

std::unique_ptr<Stager> make_default_stager(StagerOptions options) {
  return std::make_unique<DefaultStager>(options);
}

// ---------------------------------------------------------------------------
// Handles

struct AsyncSaveHandle::State {
  Mutex mu;
  CondVar cv;
  bool done DCP_GUARDED_BY(mu) = false;
  std::exception_ptr error DCP_GUARDED_BY(mu);
  Metadata metadata DCP_GUARDED_BY(mu);
  std::atomic<bool> seen{false};  // the failure reached the user
};

bool AsyncSaveHandle::ready() const {
  if (!state_) return false;
  MutexLock lock(state_->mu);
  return state_->done;
}

bool AsyncSaveHandle::wait(std::chrono::milliseconds timeout) const {
  if (!state_) throw InvalidArgumentError("wait() on an empty AsyncSaveHandle");
  MutexLock lock(state_->mu);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!state_->done)
    if (!state_->cv.wait_until(state_->mu, deadline)) return state_->done;
  return true;
}

void AsyncSaveHandle::wait() const {
  if (!state_) throw InvalidArgumentError("wait() on an empty AsyncSaveHandle");
  MutexLock lock(state_->mu);
  while (!state_->done) state_->cv.wait(state_->mu);
}

Metadata AsyncSaveHandle::get() const {
  wait();
  MutexLock lock(state_->mu);
  if (state_->error) {
    state_->seen = true;
    std::rethrow_exception(state_->error);
  }
  return state_->metadata;
}

// ---------------------------------------------------------------------------
// The saver

struct AsyncSaver::Slot {
  std::unique_ptr<Stager> stager;
  bool busy = false;
};

// One background save: what the worker thread runs.
struct AsyncSaver::Task {
  StateDict staged;
  SaveOptions options;
  Slot* slot;
  std::shared_ptr<AsyncSaveHandle::State> state;
  // Set when staging failed on this rank: the task only takes part in the
  // first round, so that the other ranks' saves fail with it at once.
  std::exception_ptr stage_failure;

  void run() {
    try {
      if (stage_failure) save_after_failure(options, "stage", stage_failure);
      Metadata md = dcp::save(staged, options);
      MutexLock lock(state->mu);
      state->metadata = std::move(md);
    } catch (...) {
      MutexLock lock(state->mu);
      state->error = std::current_exception();
    }
    staged.clear();  // drop the references to the staging buffers
    slot->stager->release();
  }
};

AsyncSaver::AsyncSaver(AsyncSaverOptions options) : options_(std::move(options)) {
  if (options_.max_in_flight < 1)
    throw InvalidArgumentError("AsyncSaverOptions.max_in_flight must be >= 1");
  for (int i = 0; i < options_.max_in_flight; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->stager =
        options_.make_stager ? options_.make_stager() : make_default_stager(options_.stager);
    if (!slot->stager) throw InvalidArgumentError("AsyncSaverOptions.make_stager returned null");
    slots_.push_back(std::move(slot));
  }
  worker_ = std::thread([this] { run(); });
}

AsyncSaver::~AsyncSaver() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

AsyncSaver::Slot* AsyncSaver::wait_for_free_slot_locked() {
  for (;;) {
    for (auto& s : slots_)
      if (!s->busy) return s.get();
    cv_.wait(mu_);
  }
}

void AsyncSaver::throw_unseen_failure_locked() {
  std::exception_ptr first;
  for (auto& s : finished_unseen_)
    if (!s->seen.exchange(true) && !first) {
      MutexLock lock(s->mu);
      first = s->error;
    }
  finished_unseen_.clear();
  if (first) std::rethrow_exception(first);
}

AsyncSaveHandle AsyncSaver::save(const StateDict& state_dict, const SaveOptions& options) {
  Slot* slot = nullptr;
  {
    MutexLock lock(mu_);
    throw_unseen_failure_locked();
    slot = wait_for_free_slot_locked();
    throw_unseen_failure_locked();  // the save we waited for may have failed
    slot->busy = true;
    ++in_flight_;
  }
  auto task = std::make_unique<Task>();
  task->options = options;
  task->slot = slot;
  task->state = std::make_shared<AsyncSaveHandle::State>();
  const std::string operation = "save of '" + options.checkpoint_id + "'";
  const int rank = options.collectives ? options.collectives->rank() : 0;
  try {
    StateDict resolved;
    for (const auto& kv : state_dict)
      with_context(operation, rank, "state_dict", "state_dict() of '" + kv.first + "'",
                   [&] { resolved.emplace(kv.first, resolve_stateful(kv.second)); });
    with_context(operation, rank, "stage", "staging",
                 [&] { task->staged = slot->stager->stage(resolved); });
  } catch (const CheckpointError&) {
    // This rank throws at once. The other ranks' background saves wait in
    // their first round for this one: a task that takes part in that round
    // with the failure makes them fail with it too, instead of waiting until
    // the collectives time out.
    if (options.collectives && options.collectives->world_size() > 1) {
      task->staged.clear();
      task->stage_failure = std::current_exception();
      task->state->seen = true;  // thrown here; not again by the next save()
      {
        MutexLock lock(mu_);
        queue_.push_back(std::move(task));
      }
      cv_.notify_all();
    } else {
      MutexLock lock(mu_);
      slot->busy = false;
      --in_flight_;
      cv_.notify_all();
    }
    throw;
  }
  AsyncSaveHandle handle(task->state);
  {
    MutexLock lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
  return handle;
}

namespace {

// Sets the calling thread's CPU and I/O priority; a refusal is logged.
void set_thread_priority(BackgroundPriority priority) {
  if (priority == BackgroundPriority::kNormal) return;
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  // ioprio_set(2): IOPRIO_WHO_PROCESS is a thread id; value = class << 13 | data.
  constexpr int kWhoProcess = 1, kClassBestEffort = 2, kClassIdle = 3, kClassShift = 13;
  int io = 0;
  if (priority == BackgroundPriority::kLow) {
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19) != 0)
      logger().debug("async saves: cannot lower the background thread's nice value: {}",
                     std::strerror(errno));
    io = kClassBestEffort << kClassShift | 7;
  } else {
    sched_param sp{};
    if (::sched_setscheduler(tid, SCHED_IDLE, &sp) != 0)
      logger().debug("async saves: cannot make the background thread SCHED_IDLE: {}",
                     std::strerror(errno));
    io = kClassIdle << kClassShift;
  }
#ifdef SYS_ioprio_set
  if (::syscall(SYS_ioprio_set, kWhoProcess, tid, io) != 0)
    logger().debug("async saves: cannot set the background thread's I/O priority: {}",
                   std::strerror(errno));
#else
  (void)io;
#endif
}

}  // namespace

void AsyncSaver::reserve(const StateDict& state_dict) {
  Slot* slot = nullptr;
  {
    MutexLock lock(mu_);
    slot = wait_for_free_slot_locked();
    slot->busy = true;  // no save takes it meanwhile
  }
  auto give_back = [&] {
    {
      MutexLock lock(mu_);
      slot->busy = false;
    }
    cv_.notify_all();
  };
  try {
    StateDict resolved;
    for (const auto& kv : state_dict) resolved.emplace(kv.first, resolve_stateful(kv.second));
    slot->stager->reserve(resolved);
  } catch (...) {
    give_back();
    throw;
  }
  give_back();
}

void AsyncSaver::run() {
  set_thread_priority(options_.priority);
  for (;;) {
    std::unique_ptr<Task> task;
    {
      MutexLock lock(mu_);
      while (!stopping_ && queue_.empty()) cv_.wait(mu_);
      if (queue_.empty()) return;  // stopping, and nothing left to do
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task->run();
    auto state = task->state;
    {
      MutexLock lock(mu_);
      task->slot->busy = false;
      --in_flight_;
      bool failed;
      {
        MutexLock slock(state->mu);
        failed = state->error != nullptr;
        state->done = true;
      }
      if (failed) finished_unseen_.push_back(state);
    }
    state->cv.notify_all();
    cv_.notify_all();
  }
}

void AsyncSaver::wait_all() {
  MutexLock lock(mu_);
  while (in_flight_ != 0) cv_.wait(mu_);
}

int AsyncSaver::in_flight() const {
  MutexLock lock(mu_);
  return in_flight_;
}

namespace {
AsyncSaver* g_default_saver = nullptr;  // never destroyed: its thread may outlive main()
void wait_for_default_saver() { g_default_saver->wait_all(); }
}  // namespace

AsyncSaveHandle async_save(const StateDict& state_dict, const SaveOptions& options) {
  static std::once_flag once;
  std::call_once(once, [] {
    logger();  // constructed before the exit hook is registered, so it outlives the hook
    g_default_saver = new AsyncSaver();
    std::atexit(wait_for_default_saver);
  });
  return g_default_saver->save(state_dict, options);
}

}  // namespace dcp
