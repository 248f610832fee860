// The commit of one manager save (steps 4-7 of the protocol in manager.cpp):
// a StorageWriter wrapper whose finish() writes the record, renames the
// save's .tmp directory into place and runs retention.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "dcp/env.h"
#include "dcp/manager/options.h"
#include "dcp/storage.h"

namespace dcp {
namespace manager {
namespace internal {

struct CommitContext {
  Env* env;
  std::string dir, tmp, final_path;
  int64_t step;
  bool force;
  bool sync;
  int world_size;
  std::map<std::string, double> metrics;
  KeepPolicy keep;
  std::function<void(const char*, int64_t)> phase;
  std::function<void(std::string)> delete_later;
  uint64_t save_number;
};

// `target` (the file-system writer of ctx.tmp) with the commit in finish().
std::shared_ptr<StorageWriter> make_commit_writer(std::shared_ptr<StorageWriter> target,
                                                  CommitContext ctx);

}  // namespace internal
}  // namespace manager
}  // namespace dcp
