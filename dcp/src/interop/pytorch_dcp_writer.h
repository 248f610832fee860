// The pytorch-dcp storage format (FileSystemWriterOptions::format): what
// the file-system writer writes so that PyTorch's DCP FileSystemReader
// loads the checkpoint (docs/INTEROP.md, "Writing PyTorch's DCP format").
//
//   __<rank>_<n>.distcp  every item a whole torch.save archive: a tensor
//                        chunk (data.pkl, byteorder, data/0 streamed from
//                        tensor memory, version), a plain value (data.pkl,
//                        byteorder, version); each archive starts at a
//                        multiple of 64 bytes, so does its data/0
//   .metadata.dcp        dcp++'s own metadata of the save (serialize_metadata):
//                        the flattening map, world size and the XXH3-64 of
//                        every item, bound to the .metadata below by its
//                        XXH3-64 (kSidecarBinding); written first
//   .metadata            the Metadata pickle (protocol 2) in 2.x's or
//                        1.13's classes; written last: the commit point
//
// The parts the writer (filesystem_writer.cpp) and the reader of PyTorch
// DCP (pytorch_dcp.cpp) share are here too.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dcp/metadata.h"
#include "dcp/planner.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {

enum class PyTorchFlavour { k2, k113 };

// "2" -> k2, "1.13" -> k113 (check_pytorch_version's values).
PyTorchFlavour pytorch_flavour(const std::string& version);

// dcp++'s sidecar beside a PyTorch DCP .metadata.
constexpr const char* kSidecarName = ".metadata.dcp";
constexpr const char* kSidecarTmpName = ".metadata.dcp.tmp";
// The sidecar's item that binds it to its .metadata: {".metadata", 0,
// size, XXH3-64 of the whole .metadata}. Its index can name no saved item
// (a chunk's offsets are never negative; a plain value's are empty).
MetadataIndex sidecar_binding_index();

// Refuses, naming the key, what the format cannot hold: a key that is not
// UTF-8 text, a tensor of a dtype Python 1.13 has no storage class for.
void check_pytorch_plan(const SavePlan& plan);

using ByteSink = std::function<void(const void* data, size_t n)>;

// Writes the torch.save archive of one tensor chunk to `sink` (its offsets
// start at the archive's first byte): data.pkl, byteorder, data/0 (the
// `n` bytes at `data`, appended in pieces of `piece_bytes`, each piece
// hashed into `xxh3` when it is non-null, then written, the zip's CRC-32
// taken as it goes by), version and the directory. Returns the archive's
// size.
uint64_t write_tensor_archive(const ByteSink& sink, const void* data, size_t n,
                              at::ScalarType dtype, const std::vector<int64_t>& sizes,
                              size_t piece_bytes, uint64_t* xxh3, const std::string& what);

// The torch.save archive of a BYTE_IO item whose bytes (from the save
// planner) are `data`: the plain value they encode (decode_plain_value),
// or, when they are not one, Python bytes of them.
std::string bytes_item_archive(const Bytes& data, const std::string& what);

// The .metadata pickle of `md` (its storage_data locates every item),
// with `checkpoint_id` and `save_id` in 2.x's storage_meta.
std::string pytorch_metadata_pickle(const Metadata& md, PyTorchFlavour flavour,
                                    const std::string& checkpoint_id, const std::string& save_id);

// The sidecar: `md` serialized, plus the binding to `pickle`.
std::string pytorch_sidecar(const Metadata& md, const std::string& pickle);

}  // namespace internal
}  // namespace dcp
