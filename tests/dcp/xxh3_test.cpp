// XXH3-64 (dcp/src/xxh3.h): the dispatched functions give libxxhash's values
// for every length class XXH3 treats apart (0, 1-3, 4-8, 9-16, 17-128,
// 129-240, longer, stripes and blocks) and any split into pieces.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "xxh3.h"

namespace dcp {
namespace internal {
namespace {

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

TEST(Xxh3Test, SameValuesAsTheLibrary) {
  SCOPED_TRACE(std::string("implementation: ") + xxh3_implementation());
  EXPECT_EQ(xxh3_64("", 0), 0x2D06800538D394C2ull);  // XXH3's value of no bytes
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (size_t n : {1023, 1024, 1025, 4096, 65535, 65536, 1 << 20, (1 << 20) + 13})
    lengths.push_back(n);
  for (size_t n : lengths) {
    const std::string s = random_bytes(n + 7, static_cast<uint32_t>(n));
    for (size_t offset : {0, 3}) {  // aligned and not
      EXPECT_EQ(xxh3_64(s.data() + offset, n), XXH3_64bits(s.data() + offset, n))
          << n << " bytes at offset " << offset;
    }
  }
}

TEST(Xxh3Test, PiecesGiveTheValueOfTheWhole) {
  const std::string s = random_bytes((3 << 20) + 101, 7);
  for (size_t piece : {1, 64, 1000, 4096, 1 << 20}) {
    Xxh3 h;
    const size_t n = piece == 1 ? 5000 : s.size();  // byte by byte: a short prefix
    for (size_t done = 0; done < n; done += piece)
      h.update(s.data() + done, std::min(piece, n - done));
    EXPECT_EQ(h.digest(), XXH3_64bits(s.data(), n)) << "pieces of " << piece;
  }
  Xxh3 empty;
  EXPECT_EQ(empty.digest(), xxh3_64(nullptr, 0));
}

}  // namespace
}  // namespace internal
}  // namespace dcp
