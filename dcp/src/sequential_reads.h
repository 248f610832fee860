// Reading large items piece by piece across read_data() calls, verified as
// they go: what dcp::convert needs (dcp/src/convert*.cpp). It streams a
// checkpoint through a bounded buffer, one read_data() call per slice of a
// tensor; a reader that checked an item's checksum only when one call read
// all of it would read every large item whole once per slice.
//
// Between begin_sequential_reads() and finish_sequential_reads() a reader
// keeps, across read_data() calls, what it has verified:
//   - the native reader hashes the bytes of a partly read item as they are
//     read, in order (XXH3, as the writer did), and checks the checksum
//     when the reads reach the item's end; an item whose reads skip bytes
//     or never reach its end is read whole and checked by
//     finish_sequential_reads();
//   - the catalog reader checks a record's CRC-32 once (by a pass over the
//     record) and keeps its files open.
// A checksum mismatch is a CorruptionError from the read_data() that finds
// it or from finish_sequential_reads(): the caller must treat whatever it
// took from the reads as unverified until finish_sequential_reads()
// returns. Outside this mode every read_data() call verifies what it reads
// (an item read in part is also read whole, once, to check it).
#pragma once

#include "dcp/storage.h"

namespace dcp {
namespace internal {

class SequentialReads {
 public:
  virtual ~SequentialReads() = default;
  virtual void begin_sequential_reads() = 0;
  virtual void finish_sequential_reads() = 0;
};

// The reader's SequentialReads (also through make_filesystem_reader()'s
// detecting reader, once it has read the metadata), or nullptr.
SequentialReads* sequential_reads(StorageReader& reader);

}  // namespace internal
}  // namespace dcp
