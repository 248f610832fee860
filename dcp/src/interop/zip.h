// Reading the zip archives torch.save writes (PyTorchStreamWriter, miniz):
// records stored uncompressed (method 0), data 64-byte aligned, data
// descriptors (flag bit 3: the local header's CRC and sizes are 0), and a
// ZIP64 end of central directory. The archive may be a byte range of a
// larger file (a DCP item inside a .distcp file): every offset here is
// relative to the start of that range, as torch.load sees it.
//
// Only the central directory is trusted for sizes and CRCs; each record's
// local header is read for its name and extra-field lengths (to find where
// the data starts). Every offset and size is checked against the range.
// Errors are CorruptionErrors naming the file, the record and the offset.
// `display` is put in messages as given, so it carries its own quotes; the
// offsets in messages are relative to the archive start, like every offset
// here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dcp/env.h"

namespace dcp {
namespace internal {

// CRC-32 (zip's, IEEE 802.3), continuing from `crc` (0 to start).
uint32_t crc32(uint32_t crc, const void* data, size_t n);

// A RandomAccessFile over bytes held in memory (a decompressed item).
std::unique_ptr<RandomAccessFile> memory_file(std::string bytes, std::string path);

struct ZipRecord {
  std::string name;     // full name, e.g. "archive/data/0"
  uint16_t method = 0;  // 0: stored; anything else is refused by ZipArchive::data_offset
  uint16_t flags = 0;   // general-purpose bit flags, from the central directory
  uint32_t crc32 = 0;   // from the central directory
  uint64_t compressed_size = 0;
  uint64_t size = 0;           // uncompressed
  uint64_t header_offset = 0;  // of the local header, relative to the archive start
  uint64_t data_offset = 0;    // of the data, relative to the archive start (from the local header)
};

class ZipArchive {
 public:
  // Reads the central directory of the archive at [base, base + length) of
  // `file` (not owned; it must outlive the archive). `display` names the
  // archive in errors ("'/ck/__0_0.distcp' bytes [862, 1609)", "'/m.pt'").
  ZipArchive(const RandomAccessFile* file, uint64_t base, uint64_t length, std::string display);

  const std::vector<ZipRecord>& records() const { return records_; }
  // The common directory of every record's name ("archive" for "archive/data.pkl");
  // PyTorchStreamReader requires one. CorruptionError when there is none.
  const std::string& prefix() const { return prefix_; }
  // The record named `prefix() + "/" + name`, or nullptr.
  const ZipRecord* find(std::string_view name) const;
  // The same; a CorruptionError naming the archive when absent.
  const ZipRecord& get(std::string_view name) const;
  // The absolute offset in `file` of the record's data, after checking that
  // it is stored (method 0: else a CorruptionError saying it is compressed,
  // which torch.save never does) and that it lies inside the archive.
  uint64_t data_offset(const ZipRecord& record) const;
  // The whole (stored) record; with `check_crc`, its CRC-32 is verified.
  std::string read(const ZipRecord& record, bool check_crc) const;
  // CorruptionError naming the record when `crc` is not its CRC-32.
  void check_crc(const ZipRecord& record, uint32_t crc) const;

  const RandomAccessFile& file() const { return *file_; }
  uint64_t base() const { return base_; }
  uint64_t length() const { return length_; }
  const std::string& display() const { return display_; }

 private:
  const RandomAccessFile* file_;
  uint64_t base_, length_;
  std::string display_;
  std::string prefix_;
  std::vector<ZipRecord> records_;
  std::unordered_map<std::string, size_t> index_;  // full name -> position in records_
};

}  // namespace internal
}  // namespace dcp
