// Writing the zip archives torch.save writes, byte for byte as LibTorch's
// PyTorchStreamWriter (miniz) lays them out: records stored (method 0),
// general-purpose flags 0x0808 (data descriptor follows the data; UTF-8
// names), each record's data 64-byte aligned relative to the archive start
// by an "FB" extra field of 'Z' padding in the local header, a ZIP64 extra
// when a size or offset needs one, a data descriptor after each record, then
// the central directory, the ZIP64 end of central directory record and
// locator, and the end of central directory record.
//
// Unlike PyTorchStreamWriter, a record's data can be streamed in pieces
// (begin / append / end): the CRC-32 is computed as the pieces go by, so a
// large tensor is written straight from its memory in one pass.
//
// Everything goes out through `sink`, in order; offsets are relative to the
// first byte the writer emitted (torch.load sees an archive that way, also
// when it is an item inside a larger file).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace dcp {
namespace internal {

class ZipWriter {
 public:
  using Sink = std::function<void(const void* data, size_t n)>;

  // `prefix`: the archive's directory ("archive"); every record is named
  // prefix + "/" + name.
  ZipWriter(std::string prefix, Sink sink);

  // A whole record from memory (small records: data.pkl, byteorder).
  void add(std::string_view name, const void* data, size_t n);
  void add(std::string_view name, std::string_view data) { add(name, data.data(), data.size()); }

  // A streamed record of exactly `size` bytes: begin() writes the local
  // header (and padding), append() the data (updating the CRC-32), end() the
  // data descriptor. An InvalidArgumentError (naming the record) when the
  // appended bytes do not add up to `size`.
  void begin(std::string_view name, uint64_t size);
  void append(const void* data, size_t n);
  void end();

  // Adds the "version" record ("3\n", as PyTorchStreamWriter::writeEndOfFile
  // does) unless one was added, then the central directory and the end
  // records. Returns the archive's total size. The writer takes no records
  // afterwards.
  uint64_t finish();

  // Bytes emitted so far.
  uint64_t offset() const { return offset_; }

 private:
  struct Entry {
    std::string name;
    uint32_t crc = 0;
    uint64_t size = 0;
    uint64_t header_offset = 0;
  };
  void emit(const void* data, size_t n);

  std::string prefix_;
  Sink sink_;
  uint64_t offset_ = 0;
  std::vector<Entry> entries_;
  bool open_ = false;  // between begin() and end()
  bool finished_ = false;
  bool has_version_ = false;
  uint64_t appended_ = 0;
  uint32_t crc_ = 0;
  // The names of entries_, to refuse duplicates.
  std::unordered_set<std::string> names_;
};

}  // namespace internal
}  // namespace dcp
