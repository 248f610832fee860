// The save statistics a run keeps in its checkpoint directory:
// <dir>/dcp_manager.stats, one JSON object per committed save, appended by
// the coordinator after the commit (the record is written before the commit
// is durable, so the figures cannot go there):
//
//   {"step":200,"async":true,"start_time":1764700000.25,"blocking_seconds":0.004,
//    "durable_seconds":0.031,"bytes":73728,"gbps":0.0024}
//
// start_time: seconds since the epoch when the save was called. The file is
// only appended to (O_APPEND, one write per line, no fsync): a crash can lose
// or tear the last line, never touch a checkpoint; a failure to append is
// logged, never thrown. Kept for directories on POSIX files (not memory://).
// `ckpt stats RUN_DIR` prints it.
#pragma once

#include <string>
#include <vector>

#include "dcp/env.h"
#include "dcp/export.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {

constexpr const char* kStatsFileName = "dcp_manager.stats";

// The statistics in <dir>/dcp_manager.stats, in the order they were
// appended; none when the file does not exist. Lines that do not parse (a
// torn last line) are skipped and counted in `skipped`. `env` as for
// list_committed.
DCP_MANAGER_EXPORT std::vector<SaveStatistics> read_save_statistics(const std::string& dir,
                                                                    Env* env = nullptr,
                                                                    size_t* skipped = nullptr);

}  // namespace manager
}  // namespace dcp
