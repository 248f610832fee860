// The in-memory backend: checkpoints live in a process-wide map of
// "files", keyed by checkpoint id ("memory://name"). Same layout, checksums
// and commit rule as the file-system backend; for fast tests and for tools
// that stage a checkpoint before shipping it elsewhere.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dcp/export.h"
#include "dcp/filesystem.h"
#include "dcp/storage.h"

namespace dcp {

DCP_CORE_EXPORT std::shared_ptr<StorageWriter> make_memory_writer(
    const std::string& checkpoint_id, FileSystemWriterOptions options = {});
DCP_CORE_EXPORT std::shared_ptr<StorageReader> make_memory_reader(
    const std::string& checkpoint_id, FileSystemReaderOptions options = {});

// Files of the in-memory checkpoint (names relative to it), for tests.
DCP_CORE_EXPORT std::vector<std::string> memory_checkpoint_files(const std::string& checkpoint_id);
// A copy of one in-memory file's bytes, for tests; throws NotFoundError when
// absent.
DCP_CORE_EXPORT std::string memory_checkpoint_file(const std::string& checkpoint_id,
                                                   const std::string& name);
// Changes one in-memory file's bytes in place, for fault-injection tests:
// `edit` runs under the store's lock (no reference to the bytes outlives it,
// so a writer or reader on another thread never sees them half-changed);
// throws NotFoundError when absent. `edit` must not call into the memory
// store itself.
DCP_CORE_EXPORT void edit_memory_checkpoint_file(const std::string& checkpoint_id,
                                                 const std::string& name,
                                                 const std::function<void(std::string&)>& edit);
// Drops every in-memory checkpoint whose id starts with `prefix`.
DCP_CORE_EXPORT void clear_memory_checkpoints(const std::string& prefix = "");

}  // namespace dcp
