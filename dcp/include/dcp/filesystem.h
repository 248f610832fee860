// The file-system backend: a checkpoint is a directory.
//
//   <dir>/__<rank>_<n>.distcp   data files: raw tensor bytes, items aligned
//   <dir>/.metadata             written last, by atomic rename: the commit point
//
// FileSystemWriterOptions::format picks what the files hold: dcp++'s own
// format (docs/FORMAT.md), or PyTorch DCP's FileSystemWriter layout, which
// Python's torch.distributed.checkpoint loads (docs/INTEROP.md, "Writing
// PyTorch's DCP format"): .metadata a pickle, every item a torch.save
// archive, plus dcp++'s checksums in .metadata.dcp.
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
#include <cstdint>
#include <memory>
#include <string>

#include "dcp/export.h"
#include "dcp/storage.h"

namespace dcp {

class Env;

// What a FileSystemWriter writes.
enum class StorageFormat : uint8_t {
  kDcp = 0,         // "dcp++": dcp++'s own format (docs/FORMAT.md)
  kPyTorchDcp = 1,  // "pytorch-dcp": PyTorch DCP's FileSystemWriter layout
};

// "dcp++" or "pytorch-dcp": the names the manager's YAML (storage.format)
// and the tools use.
DCP_CORE_EXPORT const char* storage_format_name(StorageFormat format);
// The inverse; an InvalidArgumentError naming the known names for any other.
DCP_CORE_EXPORT StorageFormat storage_format_from_name(const std::string& name);
// The PyTorch versions whose DCP the pytorch-dcp format can be written for:
// "2" (torch >= 2.4) and "1.13". An InvalidArgumentError naming them for
// any other value.
DCP_CORE_EXPORT void check_pytorch_version(const std::string& version);

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
  // The format of the files. Default kDcp. kPyTorchDcp refuses, when the
  // save is planned (before any data is written), a key that is not UTF-8
  // and a tensor of a dtype Python 1.13 cannot store (complex32).
  StorageFormat format = StorageFormat::kDcp;
  // With kPyTorchDcp: the PyTorch the .metadata is pickled for. "2"
  // (default): torch.distributed.checkpoint's classes, with planner_data
  // (the nesting of the flattened keys), storage_meta and version, as torch
  // >= 2.4 writes it. "1.13": torch.distributed._shard.checkpoint's, three
  // fields, planner_data None; 1.13 loads such a checkpoint into a flat
  // dict of the dotted keys. dcp++ reads both back exactly.
  std::string pytorch_version = "2";
  // Write the data files with O_DIRECT (Env::new_direct_writable_file): no
  // copy into the page cache and no write-back of it later, so less CPU per
  // byte, what a background save wants next to a trainer. Items whose memory
  // is 4 KiB-aligned where they fall on a 4 KiB boundary of the file (the
  // default stager's buffers in the dcp++ format) are written from where
  // they are, the rest through an aligned buffer. The files are the same
  // bytes; where the file system refuses O_DIRECT the writes go through the
  // page cache as usual. fdatasync and the directory fsync are unchanged.
  // Default off.
  bool direct_io = false;
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
