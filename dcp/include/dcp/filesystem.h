// The file-system backend: a checkpoint is a directory.
//
//   <dir>/__<rank>_<n>.distcp   data files: raw tensor bytes, items aligned
//   <dir>/.metadata             written last, by atomic rename: the commit point
//
// The directory lives in an Env (dcp/env.h): by default the one the path's
// scheme names, posix_env() for a plain path and memory_env() for
// "memory://name" (the path inside it is then "name"); the options' `env`
// replaces it (an EnvWrapper for fault injection, say).
//
// Writes go from tensor memory to the file with no serialisation copy, in
// large sequential writes (small items are coalesced into one buffer); reads
// land directly in the destination tensor when its memory is contiguous.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "dcp/export.h"
#include "dcp/storage.h"

namespace dcp {

class Env;

struct DCP_CORE_EXPORT FileSystemWriterOptions {
  // Where the files go; nullptr (default): the Env the path's scheme names
  // (env_for()). Not owned; it must outlive the writer.
  Env* env = nullptr;
  // Worker threads (TBB) writing data files in parallel. Default 2; more
  // threads help only when the storage is not already the bound.
  int threads = 2;
  // true (default): each thread writes one file (__<rank>_<thread>.distcp).
  // false: one file per item (many small files; useful for object-store-like
  // file systems, slower on local disks).
  bool file_per_thread = true;
  // fdatasync every data file and the metadata, and fsync the directory.
  // Default on: without it a crash after save() returned can lose data.
  bool sync_files = true;
  // Write over a committed checkpoint in the same directory. Default off: a
  // committed checkpoint is an AlreadyExistsError. When on, the old metadata
  // is removed (and the removal made durable) before any data is written, so
  // a failed overwrite never leaves old metadata over new data.
  bool overwrite = false;
  // An XXH3-64 checksum per item, recorded in the metadata. Default on (cost:
  // a few percent of write time).
  bool checksums = true;
  // Items smaller than this are copied into a buffer and written together;
  // larger ones are written straight from tensor memory. Default 1 MiB.
  size_t coalesce_below_bytes = size_t{1} << 20;
  // Size of the coalescing buffer per thread. Default 8 MiB.
  size_t buffer_bytes = size_t{8} << 20;
};

struct DCP_CORE_EXPORT FileSystemReaderOptions {
  // Where the files are read from; nullptr (default): the Env the path's
  // scheme names (env_for()). Not owned; it must outlive the reader.
  Env* env = nullptr;
  // Worker threads (TBB) reading in parallel. Default 2.
  int threads = 2;
  // Check every item's checksum after reading it. Default on.
  bool verify_checksums = true;
  // Neighbouring small items of one file are read together in one request of
  // at most this many bytes. Default 8 MiB.
  size_t coalesce_bytes = size_t{8} << 20;
};

DCP_CORE_EXPORT std::shared_ptr<StorageWriter> make_filesystem_writer(
    const std::string& path, FileSystemWriterOptions options = {});
// Reads dcp++'s checkpoints and, detected from what is at `path` when the
// reader is first used, PyTorch's: DCP directories (1.13 and 2.x), torch.save
// files and safetensors files or directories (docs/INTEROP.md).
DCP_CORE_EXPORT std::shared_ptr<StorageReader> make_filesystem_reader(
    const std::string& path, FileSystemReaderOptions options = {});

// What make_filesystem_reader() finds at `path` (in `env`; nullptr: the
// Env the path's scheme names): "dcp++" (also for nothing readable: the
// reader then says what is wrong), "PyTorch DCP" (a directory with a
// pickled .metadata or __<rank>.metadata files), "torch.save" (a .pt/.pth
// zip archive, or the legacy format, which is refused), or "safetensors"
// (a file, or a directory of them: Hugging Face). docs/INTEROP.md.
DCP_CORE_EXPORT std::string checkpoint_format(const std::string& path, Env* env = nullptr);

// True when `path` holds a committed checkpoint (its metadata file exists),
// in `env` (nullptr: the Env the path's scheme names).
DCP_CORE_EXPORT bool is_committed_checkpoint(const std::string& path, Env* env = nullptr);

}  // namespace dcp
