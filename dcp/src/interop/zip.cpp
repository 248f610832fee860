// The zip reader of torch.save archives (interop/zip.h).
//
// Layout read, from the end (APPNOTE.TXT 4.3):
//   [local header, data, data descriptor]...  central directory
//   [ZIP64 end of central directory record, ZIP64 locator]  end of central directory
// One read of the archive's tail usually holds the end records and the
// whole central directory; each local header is then one small read (or
// none, when the tail read covered it). The central directory is the one
// source of sizes and CRCs: with flag bit 3 (what miniz writes) the local
// header's are 0.
#include "interop/zip.h"

#include <libdeflate.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "dcp/error.h"

namespace dcp {
namespace internal {

uint32_t crc32(uint32_t crc, const void* data, size_t n) { return libdeflate_crc32(crc, data, n); }

namespace {

class MemoryFile final : public RandomAccessFile {
 public:
  MemoryFile(std::string bytes, std::string path)
      : bytes_(std::move(bytes)), path_(std::move(path)) {}
  size_t read(uint64_t offset, size_t n, void* dst) const override {
    if (offset >= bytes_.size()) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, bytes_.size() - offset));
    std::memcpy(dst, bytes_.data() + offset, n);
    return n;
  }
  uint64_t size() const override { return bytes_.size(); }
  const std::string& path() const override { return path_; }

 private:
  std::string bytes_;
  std::string path_;
};

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndSize = 22;
constexpr size_t kZip64EndSize = 56;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kMaxComment = 0xffff;
// The first read of the tail: the end records and, for the archives
// torch.save writes of a few tensors, the whole central directory.
constexpr uint64_t kTailRead = 4096;

constexpr uint16_t kFlagEncrypted = 1u << 0;
constexpr uint16_t kFlagDataDescriptor = 1u << 3;

uint16_t u16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t u32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}
uint64_t u64(const unsigned char* p) {
  return static_cast<uint64_t>(u32(p)) | static_cast<uint64_t>(u32(p + 4)) << 32;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string num(uint64_t v) { return std::to_string(v); }

// Bytes of the archive: the tail read once, anything else read on demand.
class Reader {
 public:
  Reader(const RandomAccessFile* file, uint64_t base, uint64_t length, const std::string& display)
      : file_(file), base_(base), length_(length), display_(display) {}

  // The tail [length - n, length), kept for later lookups.
  void read_tail(uint64_t n) {
    tail_begin_ = length_ - n;
    tail_ = read_fresh(tail_begin_, n, "the end of the archive");
  }
  const unsigned char* tail() const { return reinterpret_cast<const unsigned char*>(tail_.data()); }
  uint64_t tail_begin() const { return tail_begin_; }

  // [off, off + n) of the archive; `what` names it in errors. The pointer
  // is valid until the next call.
  const unsigned char* at(uint64_t off, uint64_t n, const std::string& what) {
    check_range(off, n, what);
    if (off >= tail_begin_ && !tail_.empty())
      return reinterpret_cast<const unsigned char*>(tail_.data()) + (off - tail_begin_);
    scratch_ = read_fresh(off, n, what);
    return reinterpret_cast<const unsigned char*>(scratch_.data());
  }

  void check_range(uint64_t off, uint64_t n, const std::string& what) const {
    if (off > length_ || n > length_ - off)
      throw CorruptionError(what + " of " + display_ + " at offset " + num(off) + " (" + num(n) +
                            " bytes) extends beyond the end of the archive (" + num(length_) +
                            " bytes): the archive is truncated or the offset is wrong");
  }

 private:
  std::string read_fresh(uint64_t off, uint64_t n, const std::string& what) const {
    check_range(off, n, what);
    std::string s(static_cast<size_t>(n), '\0');
    const size_t got = file_->read(base_ + off, s.size(), s.data());
    if (got != s.size())
      throw CorruptionError(what + " of " + display_ + " at offset " + num(off) + ": read " +
                            num(got) + " of " + num(n) + " bytes (the file '" + file_->path() +
                            "' is truncated)");
    return s;
  }

  const RandomAccessFile* file_;
  uint64_t base_, length_;
  const std::string& display_;
  std::string tail_;
  uint64_t tail_begin_ = 0;
  std::string scratch_;
};

// Finds the end of central directory record in the tail: the last one whose
// comment ends exactly at the end of the archive. -1 when there is none.
int64_t find_end_record(const unsigned char* t, uint64_t n) {
  if (n < kEndSize) return -1;
  for (uint64_t i = n - kEndSize + 1; i-- > 0;)
    if (u32(t + i) == kEndSig && i + kEndSize + u16(t + i + 20) == n)
      return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

std::unique_ptr<RandomAccessFile> memory_file(std::string bytes, std::string path) {
  return std::make_unique<MemoryFile>(std::move(bytes), std::move(path));
}

ZipArchive::ZipArchive(const RandomAccessFile* file, uint64_t base, uint64_t length,
                       std::string display)
    : file_(file), base_(base), length_(length), display_(std::move(display)) {
  if (!file_) throw InvalidArgumentError("ZipArchive of " + display_ + ": no file");
  const uint64_t file_size = file_->size();
  if (base_ > file_size || length_ > file_size - base_)
    throw CorruptionError("the zip archive " + display_ + " (bytes [" + num(base_) + ", " +
                          num(base_ + length_) + ")) extends beyond the end of '" + file_->path() +
                          "' (" + num(file_size) + " bytes)");
  if (length_ < kEndSize)
    throw CorruptionError(display_ + " is " + num(length_) +
                          " bytes: too short for a zip archive (its end of central directory "
                          "record alone is 22 bytes)");
  Reader r(file_, base_, length_, display_);

  // End of central directory: usually in the last few bytes (no comment);
  // else anywhere in the last 22 + 65535.
  r.read_tail(std::min(length_, kTailRead));
  int64_t found = find_end_record(r.tail(), length_ - r.tail_begin());
  if (found < 0 && r.tail_begin() > 0) {
    r.read_tail(std::min<uint64_t>(length_, kEndSize + kMaxComment));
    found = find_end_record(r.tail(), length_ - r.tail_begin());
  }
  if (found < 0)
    throw CorruptionError("no zip end of central directory record in the last " +
                          num(std::min<uint64_t>(length_, kEndSize + kMaxComment)) + " bytes of " +
                          display_ + " (" + num(length_) +
                          " bytes): not a zip archive, or truncated");
  const uint64_t end_pos = r.tail_begin() + static_cast<uint64_t>(found);
  const unsigned char* e = r.tail() + found;
  uint64_t disk = u16(e + 4), cd_disk = u16(e + 6), entries_on_disk = u16(e + 8),
           entries = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
  uint64_t cd_end = end_pos;  // where the central directory must end

  // ZIP64: the locator right before the end record names the ZIP64 end record.
  const bool zip64 =
      end_pos >= kZip64LocatorSize && u32(r.at(end_pos - kZip64LocatorSize, kZip64LocatorSize,
                                               "the ZIP64 locator")) == kZip64LocatorSig;
  if (zip64) {
    const uint64_t loc_pos = end_pos - kZip64LocatorSize;
    const unsigned char* loc = r.at(loc_pos, kZip64LocatorSize, "the ZIP64 locator");
    const uint32_t loc_disk = u32(loc + 4), total_disks = u32(loc + 16);
    const uint64_t z_pos = u64(loc + 8);
    if (loc_disk != 0 || total_disks > 1)
      throw CorruptionError("the ZIP64 locator of " + display_ + " at offset " + num(loc_pos) +
                            " names disk " + num(loc_disk) + " of " + num(total_disks) +
                            ": multi-disk archives are not supported");
    if (z_pos > loc_pos || loc_pos - z_pos < kZip64EndSize)
      throw CorruptionError("the ZIP64 locator of " + display_ + " at offset " + num(loc_pos) +
                            " puts the ZIP64 end of central directory record at offset " +
                            num(z_pos) + ", which does not end before the locator");
    const unsigned char* z = r.at(z_pos, kZip64EndSize, "the ZIP64 end of central directory");
    if (u32(z) != kZip64EndSig)
      throw CorruptionError("the ZIP64 end of central directory record of " + display_ +
                            " at offset " + num(z_pos) + " has signature " + hex32(u32(z)) +
                            ", expected " + hex32(kZip64EndSig));
    const uint64_t record_size = u64(z + 4);
    if (record_size < kZip64EndSize - 12 || record_size > loc_pos - z_pos - 12)
      throw CorruptionError("the ZIP64 end of central directory record of " + display_ +
                            " at offset " + num(z_pos) + " has size " + num(record_size) +
                            ", which does not fit between offset " + num(z_pos) +
                            " and the locator at " + num(loc_pos));
    disk = u32(z + 16);
    cd_disk = u32(z + 20);
    entries_on_disk = u64(z + 24);
    entries = u64(z + 32);
    cd_size = u64(z + 40);
    cd_offset = u64(z + 48);
    cd_end = z_pos;
  } else if (entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    throw CorruptionError("the end of central directory record of " + display_ + " at offset " +
                          num(end_pos) +
                          " defers to a ZIP64 record, but there is no ZIP64 "
                          "locator before it");
  }
  if (disk != 0 || cd_disk != 0 || entries_on_disk != entries)
    throw CorruptionError("the end of central directory record of " + display_ + " at offset " +
                          num(end_pos) + " describes a multi-disk archive (disk " + num(disk) +
                          ", central directory on disk " + num(cd_disk) + ", " +
                          num(entries_on_disk) + " of " + num(entries) +
                          " entries here): not supported");
  if (cd_offset > cd_end || cd_size != cd_end - cd_offset)
    throw CorruptionError("the central directory of " + display_ + " at offset " + num(cd_offset) +
                          " (" + num(cd_size) +
                          " bytes) does not end where the end of central directory records "
                          "start (offset " +
                          num(cd_end) + ")");
  if (entries == 0)
    throw CorruptionError(display_ + " holds no records (torch.load needs data.pkl at least)");
  if (entries > cd_size / kCentralHeaderSize)
    throw CorruptionError("the central directory of " + display_ + " at offset " + num(cd_offset) +
                          " is " + num(cd_size) + " bytes, too small for the " + num(entries) +
                          " entries the end record counts");

  // The central directory.
  std::string cd_copy;  // `at` may return a scratch buffer that the local header reads reuse
  const unsigned char* cd = r.at(cd_offset, cd_size, "the central directory");
  if (cd_offset < r.tail_begin()) {
    cd_copy.assign(reinterpret_cast<const char*>(cd), cd_size);
    cd = reinterpret_cast<const unsigned char*>(cd_copy.data());
  }
  std::unordered_map<std::string, size_t> by_name;
  std::vector<uint16_t> local_name_lengths;
  records_.reserve(entries);
  uint64_t pos = 0;
  for (uint64_t i = 0; i < entries; ++i) {
    const uint64_t at = cd_offset + pos;
    auto entry_fail = [&](const std::string& what) {
      return CorruptionError("central directory entry " + num(i) + " of " + display_ +
                             " at offset " + num(at) + ": " + what);
    };
    if (cd_size - pos < kCentralHeaderSize) throw entry_fail("truncated");
    const unsigned char* h = cd + pos;
    if (u32(h) != kCentralHeaderSig)
      throw entry_fail("signature " + hex32(u32(h)) + ", expected " + hex32(kCentralHeaderSig));
    ZipRecord rec;
    rec.flags = u16(h + 8);
    rec.method = u16(h + 10);
    rec.crc32 = u32(h + 16);
    rec.compressed_size = u32(h + 20);
    rec.size = u32(h + 24);
    const uint16_t name_len = u16(h + 28), extra_len = u16(h + 30), comment_len = u16(h + 32);
    uint32_t disk_start = u16(h + 34);
    rec.header_offset = u32(h + 42);
    if (cd_size - pos - kCentralHeaderSize < uint64_t{name_len} + extra_len + comment_len)
      throw entry_fail("its name, extra field and comment (" + num(name_len) + " + " +
                       num(extra_len) + " + " + num(comment_len) +
                       " bytes) extend beyond the central directory");
    rec.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    auto fail = [&](const std::string& what) {
      return CorruptionError("record '" + rec.name + "' of " + display_ +
                             " (central directory entry at offset " + num(at) + "): " + what);
    };
    // ZIP64 extended information (0x0001): the 64-bit values, in this order,
    // of the fields whose 32-bit value is all ones.
    const bool need_usize = rec.size == 0xffffffff, need_csize = rec.compressed_size == 0xffffffff,
               need_offset = rec.header_offset == 0xffffffff, need_disk = disk_start == 0xffff;
    if (need_usize || need_csize || need_offset || need_disk) {
      const unsigned char* x = h + kCentralHeaderSize + name_len;
      const unsigned char* x_end = x + extra_len;
      bool found64 = false;
      while (x_end - x >= 4) {
        const uint16_t id = u16(x), len = u16(x + 2);
        if (x_end - x - 4 < len)
          throw fail("extra field 0x" + hex32(id).substr(6) + " of " + num(len) +
                     " bytes extends beyond the extra fields");
        if (id == 0x0001) {
          const unsigned char* v = x + 4;
          const size_t needed = 8 * (need_usize + need_csize + need_offset) + 4 * need_disk;
          if (len < needed)
            throw fail("its ZIP64 extra field is " + num(len) + " bytes, " + num(needed) +
                       " needed for the values it must hold");
          if (need_usize) rec.size = u64(v), v += 8;
          if (need_csize) rec.compressed_size = u64(v), v += 8;
          if (need_offset) rec.header_offset = u64(v), v += 8;
          if (need_disk) disk_start = u32(v);
          found64 = true;
          break;
        }
        x += 4 + len;
      }
      if (!found64) throw fail("a size or offset defers to a ZIP64 extra field, but there is none");
    }
    if (disk_start != 0) throw fail("starts on disk " + num(disk_start) + " (multi-disk)");
    if (rec.name.empty()) throw fail("the record has an empty name");
    if (rec.method == 0 && rec.compressed_size != rec.size)
      throw fail("stored (uncompressed), but its compressed size " + num(rec.compressed_size) +
                 " differs from its size " + num(rec.size));
    if (!by_name.emplace(rec.name, records_.size()).second)
      throw fail("the name appears twice in the archive (central directory entries " +
                 num(by_name[rec.name]) + " and " + num(i) + ")");
    if (records_.empty()) {
      const size_t slash = rec.name.find('/');
      if (slash == std::string::npos || slash == 0)
        throw fail(
            "not in a directory: torch.load takes the archive's prefix directory from its first "
            "record");
      prefix_ = rec.name.substr(0, slash);
    } else if (rec.name.size() <= prefix_.size() ||
               rec.name.compare(0, prefix_.size(), prefix_) != 0 ||
               rec.name[prefix_.size()] != '/') {
      throw fail("not under the archive's prefix directory '" + prefix_ +
                 "/' (torch.load requires every record under one directory)");
    }
    local_name_lengths.push_back(name_len);
    records_.push_back(std::move(rec));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
  if (pos != cd_size)
    throw CorruptionError("the central directory of " + display_ + " at offset " + num(cd_offset) +
                          " has " + num(cd_size - pos) + " bytes after its last entry (" +
                          num(entries) + " entries)");

  // Local headers: where each record's data starts; they and the data must
  // lie before the central directory.
  for (size_t i = 0; i < records_.size(); ++i) {
    ZipRecord& rec = records_[i];
    auto fail = [&](const std::string& what) {
      return CorruptionError("record '" + rec.name + "' of " + display_ + " at offset " +
                             num(rec.header_offset) + ": " + what);
    };
    const uint64_t header_len = kLocalHeaderSize + local_name_lengths[i];
    if (rec.header_offset > cd_offset || header_len > cd_offset - rec.header_offset)
      throw fail("the local header (" + num(header_len) +
                 " bytes) does not end before the central directory at offset " + num(cd_offset));
    const unsigned char* h =
        r.at(rec.header_offset, header_len, "the local header of record '" + rec.name + "'");
    if (u32(h) != kLocalHeaderSig)
      throw fail("local header signature " + hex32(u32(h)) + ", expected " +
                 hex32(kLocalHeaderSig));
    const uint16_t flags = u16(h + 6), method = u16(h + 8), name_len = u16(h + 26),
                   extra_len = u16(h + 28);
    const uint32_t crc = u32(h + 14), csize = u32(h + 18), usize = u32(h + 22);
    if (name_len != local_name_lengths[i] ||
        std::memcmp(h + kLocalHeaderSize, rec.name.data(), name_len) != 0)
      throw fail("the local header names '" +
                 std::string(reinterpret_cast<const char*>(h + kLocalHeaderSize),
                             std::min<size_t>(name_len, local_name_lengths[i])) +
                 (name_len > local_name_lengths[i] ? "...'" : "'") + " (" + num(name_len) +
                 " bytes), the central directory '" + rec.name + "'");
    if (method != rec.method)
      throw fail("the local header says compression method " + num(method) +
                 ", the central directory " + num(rec.method));
    // Without a data descriptor the local header has the real CRC and sizes
    // (all ones: in its ZIP64 extra field, not read here).
    if (!(flags & kFlagDataDescriptor)) {
      if (crc != rec.crc32)
        throw fail("the local header's CRC-32 " + hex32(crc) + " differs from the central " +
                   "directory's " + hex32(rec.crc32));
      if ((csize != 0xffffffff && csize != rec.compressed_size) ||
          (usize != 0xffffffff && usize != rec.size))
        throw fail("the local header's sizes (" + num(csize) + " compressed, " + num(usize) +
                   ") differ from the central directory's (" + num(rec.compressed_size) + ", " +
                   num(rec.size) + ")");
    }
    rec.data_offset = rec.header_offset + header_len + extra_len;
    if (rec.data_offset > cd_offset || rec.compressed_size > cd_offset - rec.data_offset)
      throw fail("its data at offset " + num(rec.data_offset) + " (" + num(rec.compressed_size) +
                 " bytes) does not end before the central directory at offset " + num(cd_offset) +
                 ": the size is wrong or the archive is truncated");
  }
  // No record's data may run into the next record.
  std::vector<const ZipRecord*> sorted;
  sorted.reserve(records_.size());
  for (const auto& rec : records_) sorted.push_back(&rec);
  std::sort(sorted.begin(), sorted.end(), [](const ZipRecord* a, const ZipRecord* b) {
    return a->header_offset < b->header_offset;
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const ZipRecord& a = *sorted[i - 1];
    const ZipRecord& b = *sorted[i];
    if (a.data_offset + a.compressed_size > b.header_offset)
      throw CorruptionError("record '" + a.name + "' of " + display_ + " at offset " +
                            num(a.header_offset) + ": its data [" + num(a.data_offset) + ", " +
                            num(a.data_offset + a.compressed_size) + ") runs into record '" +
                            b.name + "' at offset " + num(b.header_offset) +
                            " (a wrong size in the central directory)");
  }
  index_ = std::move(by_name);
}

const ZipRecord* ZipArchive::find(std::string_view name) const {
  std::string full;
  full.reserve(prefix_.size() + 1 + name.size());
  full.append(prefix_).append("/").append(name);
  const auto it = index_.find(full);
  return it == index_.end() ? nullptr : &records_[it->second];
}

const ZipRecord& ZipArchive::get(std::string_view name) const {
  const ZipRecord* rec = find(name);
  if (!rec)
    throw CorruptionError(display_ + " has no record '" + prefix_ + "/" + std::string(name) + "'");
  return *rec;
}

uint64_t ZipArchive::data_offset(const ZipRecord& record) const {
  if (record.method != 0)
    throw CorruptionError("record '" + record.name + "' of " + display_ + " at offset " +
                          num(record.header_offset) + " is compressed (method " +
                          num(record.method) + (record.method == 8 ? ", deflate" : "") +
                          "): torch.save stores every record uncompressed, so this archive was "
                          "not written by torch.save (or was repacked)");
  if (record.flags & kFlagEncrypted)
    throw CorruptionError("record '" + record.name + "' of " + display_ + " at offset " +
                          num(record.header_offset) + " is encrypted");
  if (record.data_offset > length_ || record.size > length_ - record.data_offset)
    throw CorruptionError("record '" + record.name + "' of " + display_ + " at offset " +
                          num(record.data_offset) + " (" + num(record.size) +
                          " bytes) extends beyond the end of the archive (" + num(length_) +
                          " bytes)");
  return base_ + record.data_offset;
}

std::string ZipArchive::read(const ZipRecord& record, bool check) const {
  const uint64_t off = data_offset(record);
  std::string s(static_cast<size_t>(record.size), '\0');
  const size_t got = file_->read(off, s.size(), s.data());
  if (got != s.size())
    throw CorruptionError("record '" + record.name + "' of " + display_ + " at offset " +
                          num(record.data_offset) + ": read " + num(got) + " of " +
                          num(record.size) + " bytes (the file '" + file_->path() +
                          "' is truncated)");
  if (check) check_crc(record, crc32(0, s.data(), s.size()));
  return s;
}

void ZipArchive::check_crc(const ZipRecord& record, uint32_t crc) const {
  if (crc != record.crc32)
    throw CorruptionError("CRC-32 mismatch in record '" + record.name + "' of " + display_ +
                          " at offset " + num(record.data_offset) + ": stored " +
                          hex32(record.crc32) + ", computed " + hex32(crc));
}

}  // namespace internal
}  // namespace dcp
