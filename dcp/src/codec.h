// A small binary encoder/decoder: little-endian fixed-width integers,
// LEB128 varints and length-prefixed strings. Used for the metadata file,
// plans sent between ranks and plain values. The decoder checks every read
// against the end of the buffer and throws CorruptionError naming `source`.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "dcp/error.h"

namespace dcp {
namespace internal {
namespace codec {

class Encoder {
 public:
  void u8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { fixed(v); }
  void u64(uint64_t v) { fixed(v); }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    fixed(bits);
  }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    buf_.push_back(static_cast<char>(v));
  }
  // Zig-zag signed varint.
  void svarint(int64_t v) {
    varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }
  void str(std::string_view s) {
    varint(s.size());
    buf_.append(s.data(), s.size());
  }
  void ints(const std::vector<int64_t>& v) {
    varint(v.size());
    for (int64_t x : v) svarint(x);
  }
  void raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }

  std::string& buffer() { return buf_; }
  std::string take() { return std::move(buf_); }

 private:
  template <typename T>
  void fixed(T v) {
    char b[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    buf_.append(b, sizeof(T));
  }
  std::string buf_;
};

class Decoder {
 public:
  Decoder(std::string_view data, std::string source) : data_(data), source_(std::move(source)) {}

  uint8_t u8() {
    need(1, "u8");
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint32_t u32() { return fixed<uint32_t>(); }
  uint64_t u64() { return fixed<uint64_t>(); }
  double f64() {
    uint64_t bits = fixed<uint64_t>();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1, "varint");
      uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  int64_t svarint() {
    uint64_t z = varint();
    return static_cast<int64_t>((z >> 1) ^ (~(z & 1) + 1));
  }
  // A count of elements that each take at least one byte: bounded by what is left.
  size_t count(const char* what) {
    uint64_t n = varint();
    if (n > remaining()) fail(std::string("implausible ") + what + " count " + std::to_string(n));
    return static_cast<size_t>(n);
  }
  std::string_view str_view() {
    uint64_t n = varint();
    need(n, "string");
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string str() { return std::string(str_view()); }
  std::vector<int64_t> ints() {
    size_t n = count("integer list");
    std::vector<int64_t> v(n);
    for (auto& x : v) x = svarint();
    return v;
  }
  std::string_view raw(size_t n) {
    need(n, "raw bytes");
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }
  bool done() const { return pos_ == data_.size(); }
  const std::string& source() const { return source_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw CorruptionError(source_ + ": malformed data at byte " + std::to_string(pos_) + ": " +
                          what);
  }

 private:
  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string("truncated while reading ") + what + " (need " + std::to_string(n) +
           " bytes, " + std::to_string(remaining()) + " left)");
  }
  template <typename T>
  T fixed() {
    need(sizeof(T), "fixed-width integer");
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i)
      v |= static_cast<T>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += sizeof(T);
    return v;
  }

  std::string_view data_;
  size_t pos_ = 0;
  std::string source_;
};

}  // namespace codec
}  // namespace internal
}  // namespace dcp
