// What the file-system writer and reader share (filesystem_writer.cpp, filesystem_reader.cpp).
#pragma once

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <ATen/ATen.h>

#include <exception>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "chunk_validation.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/storage.h"
#include "env.h"

namespace dcp {
namespace internal {
namespace fs {

// Runs fn(i) for i in [0, n) on `threads` threads; every task runs even when
// some fail, and the first failure is rethrown after all have finished.
template <typename Fn>
void run_parallel(int threads, size_t n, const Fn& fn) {
  std::vector<std::exception_ptr> errors(n);
  auto body = [&](size_t i) {
    at::NoGradGuard no_grad;
    try {
      fn(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  if (threads <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) body(i);
  } else {
    tbb::task_arena arena(threads);
    arena.execute([&] {
      tbb::parallel_for(
          tbb::blocked_range<size_t>(0, n, 1),
          [&](const tbb::blocked_range<size_t>& r) {
            for (size_t i = r.begin(); i != r.end(); ++i) body(i);
          },
          tbb::simple_partitioner());
    });
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// fn(), run now, and its outcome as a future (the readers' read_data).
template <typename Fn>
std::future<void> run_now(const Fn& fn) {
  std::promise<void> promise;
  try {
    fn();
    promise.set_value();
  } catch (...) {
    promise.set_exception(std::current_exception());
  }
  return promise.get_future();
}

// The box a read takes from its saved chunk (of `sizes`) lies inside the
// chunk; an InvalidArgumentError otherwise.
inline void check_read_box(const std::vector<int64_t>& sizes, const ReadItem& ri) {
  bool inside = ri.lengths.size() == sizes.size() && ri.storage_offsets.size() == sizes.size();
  for (size_t d = 0; inside && d < sizes.size(); ++d)
    inside = ri.storage_offsets[d] >= 0 && ri.lengths[d] >= 0 &&
             ri.storage_offsets[d] <= sizes[d] && ri.lengths[d] <= sizes[d] - ri.storage_offsets[d];
  if (!inside)
    throw InvalidArgumentError("the plan reads the box at " + shape_str(ri.storage_offsets) +
                               " of size " + shape_str(ri.lengths) + " from a chunk of size " +
                               shape_str(sizes));
}

// Where a checkpoint lives: an Env, the id's scheme ("" for POSIX paths,
// "memory://" for the memory store) and the path inside the Env.
struct Location {
  Env* env;
  std::string scheme;
  std::string path;

  void reset(const std::string& id) {
    if (id.empty()) return;
    path = !scheme.empty() && id.compare(0, scheme.size(), scheme) == 0 ? id.substr(scheme.size())
                                                                        : id;
  }
  bool accepts(const std::string& id) const {
    return scheme.empty() ? id.find("://") == std::string::npos
                          : id.compare(0, scheme.size(), scheme) == 0;
  }
  // The checkpoint id, as users spell it (for messages and metadata).
  std::string display(const std::string& p) const { return scheme + p; }
  std::string id() const { return display(path); }
  std::string file(const std::string& name) const { return join_path(path, name); }
};
// The reader of the checkpoint at `path` of `env`, whatever its format: it
// looks at what is there when first used (interop/detect.cpp) and reads a
// dcp++ checkpoint with the native reader (new_native_reader), anything else
// through its catalog (interop/catalog.h).
std::shared_ptr<StorageReader> new_reader(Env* env, std::string scheme, std::string path,
                                          FileSystemReaderOptions options);
std::shared_ptr<StorageReader> new_native_reader(Env* env, std::string scheme, std::string path,
                                                 FileSystemReaderOptions options);

}  // namespace fs
}  // namespace internal
}  // namespace dcp
