// Asynchronous save: the caller blocks only while its tensors are copied
// into staging memory; a background thread writes the checkpoint.
//
//   dcp::AsyncSaver saver;                       // owns the thread and the buffers
//   auto handle = saver.save(state_dict, opts);  // returns after the copy
//   ... train: the checkpoint holds the values at the call ...
//   dcp::Metadata md = handle.get();             // waits; rethrows a failure
//
// In a process group, give the saves a group of their own
// (SaveOptions::collectives over a second process group): the background
// collectives then never interleave with the training thread's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dcp/checkpoint.h"
#include "dcp/export.h"
#include "dcp/thread_annotations.h"

namespace dcp {

// Copies a state dict into memory that the caller cannot change (DCP's
// AsyncStager). stage() returns a state dict of the same structure whose
// tensors are the stager's copies and whose plain values are copies; the
// copies stay valid until release(), when the stager may reuse them.
class DCP_CORE_EXPORT Stager {
 public:
  Stager() = default;
  Stager(const Stager&) = delete;
  Stager& operator=(const Stager&) = delete;
  virtual ~Stager() = default;
  // `state_dict` holds no Stateful objects. Not called again before release().
  virtual StateDict stage(const StateDict& state_dict) = 0;
  // The save that used the last staged dict is over.
  virtual void release() {}
  // Prepares, ahead of time, the memory a stage() of a state dict of this
  // structure will use (allocated and faulted in), so that the first stage()
  // costs what the later ones do. `state_dict` holds no Stateful objects; its
  // tensors are not copied. Not called between stage() and release().
  // Default: does nothing.
  virtual void reserve(const StateDict& state_dict) { (void)state_dict; }
};

struct DCP_CORE_EXPORT StagerOptions {
  // Threads copying into staging memory. Default 2; the copy is bound by
  // memory bandwidth, so more than the cores available rarely helps.
  int threads = 2;
  // Advise transparent huge pages for buffers of 2 MiB and more (rounded up
  // to whole huge pages). Off by default: measured here, populating 2 GiB
  // took 0.25-0.4 s when free huge pages were at hand but 3-8 s when the
  // kernel had to compact memory for them, against 0.6-1.0 s with 4 KiB pages.
  bool huge_pages = false;
  // Take each tensor's XXH3-64 (up to 64 MiB; larger ones are split over
  // the threads) while it is copied, 4 MiB at a time while that is in cache;
  // the file-system writer (dcp++ format) then uses it instead of reading the
  // buffer again in the background. Default false: measured on 2 GiB it
  // made the blocking copy 1.75x a memcpy instead of 1.0x and did not lower
  // train_loop_slowdown (README, Performance).
  bool checksums = false;
};

// The default stager: one CPU buffer per tensor, kept and reused by the next
// stage() of a tensor with the same key, dtype and shape (so no allocation
// per save once warm); contiguous copies in parallel, in pieces of up to
// 32 MiB. Pinned memory is used when CUDA is available (not in CPU builds);
// otherwise buffers of 1 MiB and more are page-aligned anonymous mappings
// (StagerOptions::huge_pages), faulted in at once when allocated
// (MADV_POPULATE_WRITE, in pieces over the stager's threads) rather than
// page by page during the copy, and
// aligned for O_DIRECT writes (FileSystemWriterOptions::direct_io).
// reserve() allocates them before the first save.
// Extra memory: one copy of the state dict's tensors.
DCP_CORE_EXPORT std::unique_ptr<Stager> make_default_stager(StagerOptions options = {});

// The result of one asynchronous save. Copyable; every copy refers to the
// same save.
class [[nodiscard]] DCP_CORE_EXPORT AsyncSaveHandle {
 public:
  AsyncSaveHandle() = default;
  // True when the save has finished (committed or failed).
  bool ready() const;
  // Waits up to `timeout`; true when the save has finished.
  bool wait(std::chrono::milliseconds timeout) const;
  void wait() const;
  // Waits, then returns the committed metadata (as save() does: whole on
  // the coordinator, its header elsewhere unless
  // SaveOptions::metadata_on_every_rank) or rethrows the failure (a
  // CheckpointError). A failure seen here is not thrown again by the
  // next AsyncSaver::save().
  Metadata get() const;
  bool valid() const { return state_ != nullptr; }

  struct State;

 private:
  friend class AsyncSaver;
  explicit AsyncSaveHandle(std::shared_ptr<State> s) : state_(std::move(s)) {}
  std::shared_ptr<State> state_;
};

// The scheduling priority of an AsyncSaver's background thread, which runs
// the save (plan, collectives, the writing itself when
// FileSystemWriterOptions::threads is 1; more writer threads are TBB
// workers, at their own priority).
enum class BackgroundPriority {
  kNormal,  // the priority of the thread that made the saver
  kLow,     // nice 19 and the lowest best-effort I/O priority (ioprio 7)
  kIdle,    // SCHED_IDLE and the idle I/O class: runs only on idle cores
};

struct DCP_CORE_EXPORT AsyncSaverOptions {
  // Saves staged but not yet committed at one time. Default 1: save() first
  // waits for the previous save. Each slot holds one copy of the state dict.
  int max_in_flight = 1;
  // Makes the stager of each slot; default make_default_stager().
  std::function<std::unique_ptr<Stager>()> make_stager;
  StagerOptions stager;
  // The background thread's priority. Default kNormal.
  BackgroundPriority priority = BackgroundPriority::kNormal;
};

// Runs saves on one background thread. Thread-safe. The destructor waits for
// every save in flight to finish (never leaving a half-written checkpoint
// behind: the metadata is written last, so an interrupted save is never
// taken for a checkpoint anyway).
class DCP_CORE_EXPORT AsyncSaver {
 public:
  explicit AsyncSaver(AsyncSaverOptions options = {});
  ~AsyncSaver();
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  // Stages `state_dict` (Stateful objects are asked for state_dict() now)
  // and returns; the save runs in the background with `options`. With
  // max_in_flight saves pending it first waits for the oldest. A failure of
  // an earlier save that nobody has seen through its handle is thrown here,
  // once, and this save is not started.
  // When state_dict() or staging throws, this throws a CheckpointError (step
  // "state_dict" or "stage") at once; on several ranks the background thread
  // still takes part in the save's first round with that failure, so the
  // other ranks' handles fail with the same error instead of waiting for
  // the collectives' timeout.
  AsyncSaveHandle save(const StateDict& state_dict, const SaveOptions& options);

  // Prepares the staging memory of the next save() of a state dict like
  // `state_dict` (Stateful objects are asked for state_dict() now; no tensor
  // is copied): the stager of the slot the next save takes allocates and
  // faults in its buffers, so that the first save blocks no longer than the
  // later ones. The memory is what that save would allocate anyway (one copy
  // of the tensors), only earlier. Waits while every slot is busy. Runs on
  // the calling thread; a failure (out of memory) is thrown and leaves the
  // saver usable. CheckpointManager::resume() calls it.
  void reserve(const StateDict& state_dict);

  // Waits for every save in flight. Does not throw.
  void wait_all();
  // Saves started and not yet finished.
  int in_flight() const;

 private:
  struct Slot;
  struct Task;
  void run();
  void throw_unseen_failure_locked() DCP_REQUIRES(mu_);
  Slot* wait_for_free_slot_locked() DCP_REQUIRES(mu_);

  const AsyncSaverOptions options_;
  mutable Mutex mu_;
  CondVar cv_;
  std::vector<std::unique_ptr<Slot>> slots_ DCP_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<Task>> queue_ DCP_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<AsyncSaveHandle::State>> finished_unseen_ DCP_GUARDED_BY(mu_);
  int in_flight_ DCP_GUARDED_BY(mu_) = 0;
  bool stopping_ DCP_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

// async_save() on a process-wide AsyncSaver (max_in_flight 1), which waits
// for its saves at exit.
DCP_CORE_EXPORT AsyncSaveHandle async_save(const StateDict& state_dict, const SaveOptions& options);

}  // namespace dcp
