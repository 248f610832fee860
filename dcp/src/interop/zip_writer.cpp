// The zip writer of torch.save archives (interop/zip_writer.h): what
// PyTorchStreamWriter (LibTorch 1.13) makes miniz write, which opens every
// archive in ZIP64 mode (MZ_ZIP_FLAG_WRITE_ZIP64) and is built without
// file times (MINIZ_NO_TIME). Per record at offset `ofs`, of `size` bytes:
//
//   local header  version needed 0, flags 0x0808 (0x0800 for an empty
//                 record: no data descriptor), method 0, time/date 0,
//                 CRC and sizes 0, then the name and the extra fields:
//     ZIP64 extra (only when size or ofs >= 0xffffffff): size and a
//                 compressed size of 0 (when size >= 0xffffffff; miniz
//                 writes it before it knows the compressed size), ofs (when
//                 ofs >= 0xffffffff)
//     "FB" extra   'Z' padding so the data starts at a multiple of 64
//                 (caffe2::serialize::detail::getPadding)
//   data
//   descriptor    PK\7\8, CRC-32, compressed and uncompressed size: u32 each
//                 (16 bytes), u64 each (24 bytes) when the local header has a
//                 ZIP64 extra; none for an empty record
//
// then the central directory (version made by and needed 0, external
// attributes 0, sizes and offset capped at 0xffffffff with the true values in
// a ZIP64 extra under the same conditions as above, no "FB" extra), the ZIP64
// end of central directory record (made by 0x031e, needed 0x002d), its
// locator (1 disk), and the end of central directory record.
#include "interop/zip_writer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "dcp/error.h"
#include "interop/zip.h"

namespace dcp {
namespace internal {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kZip64EndSize = 56;
constexpr uint64_t kU32Max = 0xffffffffu;
constexpr uint16_t kFlagDescriptor = 0x0008;
constexpr uint16_t kFlagUtf8 = 0x0800;
constexpr uint64_t kAlignment = 64;  // caffe2::serialize::detail::kFieldAlignment

class Buf {
 public:
  void u16(uint64_t v) { le(v, 2); }
  void u32(uint64_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void append(std::string_view s) { s_.append(s.data(), s.size()); }
  void fill(size_t n, char c) { s_.append(n, c); }
  const std::string& str() const { return s_; }

 private:
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string s_;
};

bool zip64_sizes(uint64_t size) { return size >= kU32Max; }
bool zip64_offset(uint64_t ofs) { return ofs >= kU32Max; }

// miniz's mz_zip_writer_create_zip64_extra_data: the fields that need it.
void zip64_extra(Buf& b, uint64_t size, uint64_t compressed, uint64_t ofs) {
  const uint16_t n = (zip64_sizes(size) ? 16 : 0) + (zip64_offset(ofs) ? 8 : 0);
  b.u16(0x0001);
  b.u16(n);
  if (zip64_sizes(size)) {
    b.u64(size);
    b.u64(compressed);
  }
  if (zip64_offset(ofs)) b.u64(ofs);
}

size_t zip64_extra_size(uint64_t size, uint64_t ofs) {
  if (!zip64_sizes(size) && !zip64_offset(ofs)) return 0;
  return 4 + (zip64_sizes(size) ? 16 : 0) + (zip64_offset(ofs) ? 8 : 0);
}

std::string q(const std::string& s) { return "'" + s + "'"; }

}  // namespace

ZipWriter::ZipWriter(std::string prefix, Sink sink)
    : prefix_(std::move(prefix)), sink_(std::move(sink)) {
  if (prefix_.empty() || prefix_.front() == '/')
    throw InvalidArgumentError("a zip archive's directory must be a relative name, not '" +
                               prefix_ + "'");
}

void ZipWriter::emit(const void* data, size_t n) {
  if (n == 0) return;
  sink_(data, n);
  offset_ += n;
}

void ZipWriter::add(std::string_view name, const void* data, size_t n) {
  begin(name, n);
  append(data, n);
  end();
}

void ZipWriter::begin(std::string_view name, uint64_t size) {
  const std::string full = prefix_ + "/" + std::string(name);
  if (finished_)
    throw InvalidArgumentError("zip record " + q(full) + " added after the archive was finished");
  if (open_)
    throw InvalidArgumentError("zip record " + q(full) + " begun while record " +
                               q(entries_.back().name) + " is still open");
  if (name.empty() || full.size() > 0xffff)
    throw InvalidArgumentError("zip record " + q(full) +
                               ": a record name must be 1 to 65535 bytes long");
  if (names_.count(full)) throw InvalidArgumentError("zip record " + q(full) + " added twice");

  Entry e;
  e.name = full;
  e.size = size;
  e.header_offset = offset_;
  const uint64_t ofs = offset_;

  // caffe2::serialize::detail::getPadding: the data follows the header, the
  // name, the ZIP64 extra and the 4-byte "FB" extra header.
  const size_t z64 = zip64_extra_size(size, ofs);
  const uint64_t start = ofs + kLocalHeaderSize + full.size() + z64 + 4;
  const uint64_t padding = (kAlignment - start % kAlignment) % kAlignment;

  Buf h;
  h.u32(kLocalHeaderSig);
  h.u16(0);  // version needed
  h.u16(size ? kFlagDescriptor | kFlagUtf8 : kFlagUtf8);
  h.u16(0);  // method: stored
  h.u16(0);  // time
  h.u16(0);  // date
  h.u32(0);  // CRC-32
  h.u32(0);  // compressed size
  h.u32(0);  // uncompressed size
  h.u16(full.size());
  h.u16(z64 + 4 + padding);
  h.append(full);
  if (z64) zip64_extra(h, size, 0, ofs);
  h.append("FB");
  h.u16(padding);
  h.fill(padding, 'Z');
  emit(h.str().data(), h.str().size());

  names_.insert(full);
  entries_.push_back(std::move(e));
  if (name == "version" || name == ".data/version") has_version_ = true;
  open_ = true;
  appended_ = 0;
  crc_ = 0;
}

void ZipWriter::append(const void* data, size_t n) {
  if (!open_)
    throw InvalidArgumentError(
        "zip data appended with no record begun" +
        (entries_.empty() ? std::string() : " (the last was " + q(entries_.back().name) + ")"));
  const Entry& e = entries_.back();
  if (n > e.size - appended_)
    throw InvalidArgumentError("zip record " + q(e.name) + ": " + std::to_string(n) +
                               " bytes appended after " + std::to_string(appended_) +
                               " would pass its size of " + std::to_string(e.size) + " bytes");
  crc_ = crc32(crc_, data, n);
  appended_ += n;
  emit(data, n);
}

void ZipWriter::end() {
  if (!open_) throw InvalidArgumentError("zip record ended with none begun");
  Entry& e = entries_.back();
  if (appended_ != e.size)
    throw InvalidArgumentError("zip record " + q(e.name) + " ended after " +
                               std::to_string(appended_) + " of its " + std::to_string(e.size) +
                               " bytes");
  e.crc = crc_;
  if (e.size) {
    Buf d;
    d.u32(kDescriptorSig);
    d.u32(e.crc);
    if (zip64_extra_size(e.size, e.header_offset)) {
      d.u64(e.size);
      d.u64(e.size);
    } else {
      d.u32(e.size);
      d.u32(e.size);
    }
    emit(d.str().data(), d.str().size());
  }
  open_ = false;
}

uint64_t ZipWriter::finish() {
  if (finished_) throw InvalidArgumentError("zip archive finished twice");
  if (open_)
    throw InvalidArgumentError("zip archive finished while record " + q(entries_.back().name) +
                               " is still open");
  if (!has_version_) add("version", std::string_view("3\n"));
  finished_ = true;

  const uint64_t cd_offset = offset_;
  Buf cd;
  for (const Entry& e : entries_) {
    cd.u32(kCentralHeaderSig);
    cd.u16(0);  // version made by
    cd.u16(0);  // version needed
    cd.u16(e.size ? kFlagDescriptor | kFlagUtf8 : kFlagUtf8);
    cd.u16(0);  // method
    cd.u16(0);  // time
    cd.u16(0);  // date
    cd.u32(e.crc);
    cd.u32(std::min(e.size, kU32Max));
    cd.u32(std::min(e.size, kU32Max));
    cd.u16(e.name.size());
    cd.u16(zip64_extra_size(e.size, e.header_offset));
    cd.u16(0);  // comment length
    cd.u16(0);  // disk number start
    cd.u16(0);  // internal attributes
    cd.u32(0);  // external attributes
    cd.u32(std::min(e.header_offset, kU32Max));
    cd.append(e.name);
    if (zip64_extra_size(e.size, e.header_offset)) zip64_extra(cd, e.size, e.size, e.header_offset);
  }
  const uint64_t cd_size = cd.str().size();
  emit(cd.str().data(), cd.str().size());

  const uint64_t zip64_end_offset = offset_;
  const uint64_t n = entries_.size();
  Buf end;
  end.u32(kZip64EndSig);
  end.u64(kZip64EndSize - 12);
  end.u16(0x031e);  // version made by
  end.u16(0x002d);  // version needed
  end.u32(0);       // this disk
  end.u32(0);       // the central directory's disk
  end.u64(n);
  end.u64(n);
  end.u64(cd_size);
  end.u64(cd_offset);
  end.u32(kZip64LocatorSig);
  end.u32(0);  // the ZIP64 end record's disk
  end.u64(zip64_end_offset);
  end.u32(1);  // disks
  end.u32(kEndSig);
  end.u16(0);
  end.u16(0);
  end.u16(std::min<uint64_t>(n, 0xffff));
  end.u16(std::min<uint64_t>(n, 0xffff));
  end.u32(std::min(cd_size, kU32Max));
  end.u32(std::min(cd_offset, kU32Max));
  end.u16(0);  // comment length
  emit(end.str().data(), end.str().size());
  return offset_;
}

}  // namespace internal
}  // namespace dcp
