#include "wire.h"

#include <algorithm>
#include <functional>

#include "codec.h"

namespace dcp {
namespace internal {
namespace wire {

namespace {

void put_index(codec::Encoder& e, const MetadataIndex& i) {
  e.str(i.fqn);
  e.ints(i.offset);
}
MetadataIndex get_index(codec::Decoder& d) {
  MetadataIndex i;
  i.fqn = d.str();
  i.offset = d.ints();
  return i;
}

codec::Decoder decoder(std::string_view bytes) {
  return codec::Decoder(bytes, "message from a peer rank");
}

void finish(codec::Decoder& d) {
  if (!d.done()) d.fail("trailing bytes");
}

void put_item(codec::Encoder& e, const WriteItem& it) {
  put_index(e, it.index);
  e.u8(static_cast<uint8_t>(it.type));
  e.u8(it.tensor_data ? 1 : 0);
  if (it.tensor_data) {
    const auto& td = *it.tensor_data;
    e.ints(td.chunk.offsets);
    e.ints(td.chunk.sizes);
    e.u8(static_cast<uint8_t>(td.properties.dtype));  // same build on every rank
    e.u8(td.properties.requires_grad ? 1 : 0);
    e.ints(td.size);
  }
}

void get_item(codec::Decoder& d, WriteItem& it) {
  it.index = get_index(d);
  const uint8_t type = d.u8();
  if (type > 2) d.fail("bad write item type");
  it.type = static_cast<WriteItemType>(type);
  if (d.u8()) {
    TensorWriteData td;
    td.chunk.offsets = d.ints();
    td.chunk.sizes = d.ints();
    td.properties.dtype = static_cast<at::ScalarType>(d.u8());
    td.properties.requires_grad = d.u8() != 0;
    td.size = d.ints();
    it.tensor_data = std::move(td);
  }
}

void put_tail(codec::Encoder& e, const SavePlan& plan) {
  e.str(plan.storage_data);
  e.str(plan.planner_data);
  e.u8(plan.usable ? 1 : 0);
}

void get_tail(codec::Decoder& d, SavePlan& plan) {
  plan.storage_data = d.str();
  plan.planner_data = d.str();
  plan.usable = d.u8() != 0;
}

void put_item(codec::Encoder& e, const ReadItem& it) {
  e.u8(static_cast<uint8_t>(it.type));
  put_index(e, it.dest_index);
  e.ints(it.dest_offsets);
  put_index(e, it.storage_index);
  e.ints(it.storage_offsets);
  e.ints(it.lengths);
}

void get_item(codec::Decoder& d, ReadItem& it) {
  const uint8_t type = d.u8();
  if (type > 1) d.fail("bad read item type");
  it.type = static_cast<LoadItemType>(type);
  it.dest_index = get_index(d);
  it.dest_offsets = d.ints();
  it.storage_index = get_index(d);
  it.storage_offsets = d.ints();
  it.lengths = d.ints();
}

void put_tail(codec::Encoder& e, const LoadPlan& plan) {
  e.str(plan.storage_data);
  e.str(plan.planner_data);
}

void get_tail(codec::Decoder& d, LoadPlan& plan) {
  plan.storage_data = d.str();
  plan.planner_data = d.str();
}

template <typename Plan>
std::string encode_plan(const Plan& plan) {
  codec::Encoder e;
  e.varint(plan.items.size());
  for (const auto& it : plan.items) put_item(e, it);
  put_tail(e, plan);
  return e.take();
}

template <typename Plan>
void decode_plan(std::string_view bytes, Plan& plan, std::vector<size_t>* bounds) {
  auto d = decoder(bytes);
  plan.items.resize(d.count("plan item"));
  if (bounds) {
    bounds->clear();
    bounds->reserve(plan.items.size() + 1);
    bounds->push_back(d.position());
  }
  for (auto& it : plan.items) {
    get_item(d, it);
    if (bounds) bounds->push_back(d.position());
  }
  get_tail(d, plan);
  finish(d);
}

// The encoded items of a rank's local plan, found by their bytes: open
// addressing over item indexes; each item is handed out once.
class ItemTable {
 public:
  ItemTable(std::string_view bytes, const std::vector<size_t>& bounds)
      : bytes_(bytes), bounds_(bounds) {
    const size_t n = bounds_.empty() ? 0 : bounds_.size() - 1;
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, 0);
    taken_.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      size_t h = hash(item(i)) & (cap - 1);
      while (slots_[h] != 0) h = (h + 1) & (cap - 1);
      slots_[h] = static_cast<uint32_t>(i + 1);
    }
  }

  // The index of a local item not yet taken with exactly these bytes, now
  // taken; -1 if there is none.
  int64_t take(std::string_view bytes) {
    const size_t mask = slots_.size() - 1;
    for (size_t h = hash(bytes) & mask; slots_[h] != 0; h = (h + 1) & mask) {
      const size_t i = slots_[h] - 1;
      if (!taken_[i] && item(i) == bytes) {
        taken_[i] = 1;
        return static_cast<int64_t>(i);
      }
    }
    return -1;
  }

 private:
  std::string_view item(size_t i) const {
    return bytes_.substr(bounds_[i], bounds_[i + 1] - bounds_[i]);
  }
  static size_t hash(std::string_view s) { return std::hash<std::string_view>()(s); }

  std::string_view bytes_;
  const std::vector<size_t>& bounds_;
  std::vector<uint32_t> slots_;  // item index + 1; 0 is empty
  std::vector<char> taken_;
};

// A reply: the item count; 1 if the final plan is runs of local items in
// their order (the rank then compacts its plan in place), else 0; runs until
// the count is reached, each (len << 1 | 0, first local index): local items
// [first, first + len), or (len << 1 | 1, len encoded items): items the
// local plan does not have; then the tail of the plan.
template <typename Plan>
std::string encode_reply_plan(const Plan& final_plan, std::string_view local_bytes,
                              const std::vector<size_t>& bounds) {
  ItemTable table(local_bytes, bounds);
  codec::Encoder runs, item, literal;
  uint64_t run = 0, run_start = 0, literal_run = 0, end = 0;
  bool in_order = true;
  auto flush = [&] {
    if (run > 0) {
      runs.varint(run << 1);
      runs.varint(run_start);
      if (run_start < end) in_order = false;
      end = run_start + run;
      run = 0;
    }
    if (literal_run > 0) {
      runs.varint(literal_run << 1 | 1);
      runs.raw(literal.buffer().data(), literal.buffer().size());
      literal.buffer().clear();
      literal_run = 0;
      in_order = false;
    }
  };
  for (const auto& it : final_plan.items) {
    item.buffer().clear();
    put_item(item, it);
    const int64_t i = table.take(item.buffer());
    if (i >= 0) {
      if (literal_run > 0 || (run > 0 && static_cast<uint64_t>(i) != run_start + run)) flush();
      if (run == 0) run_start = static_cast<uint64_t>(i);
      ++run;
    } else {
      if (run > 0) flush();
      literal.raw(item.buffer().data(), item.buffer().size());
      ++literal_run;
    }
  }
  flush();
  codec::Encoder e;
  e.varint(final_plan.items.size());
  e.u8(in_order ? 1 : 0);
  e.raw(runs.buffer().data(), runs.buffer().size());
  put_tail(e, final_plan);
  return e.take();
}

template <typename Plan>
void decode_reply_plan(std::string_view bytes, Plan& local, Plan& out) {
  auto d = decoder(bytes);
  const uint64_t n = d.varint();
  const uint8_t in_order = d.u8();
  const size_t have = local.items.size();
  if (in_order > 1) d.fail("bad order flag in a plan reply");
  if (n > have + d.remaining()) d.fail("implausible item count in a plan reply");
  // The next run: its length (checked against the items still to come)
  // and whether it brings new items.
  auto next_run = [&](uint64_t done, bool& literal) {
    const uint64_t head = d.varint(), len = head >> 1;
    if (len == 0 || len > n - done) d.fail("bad run length in a plan reply");
    literal = head & 1;
    return len;
  };
  // The first local item of a run of `len` of them.
  auto run_start = [&](uint64_t len) {
    const uint64_t start = d.varint();
    if (start > have || len > have - start)
      d.fail("a plan reply names items the local plan does not have");
    return start;
  };
  bool literal = false;
  if (in_order) {
    // Compact the local plan in place: no new item vector to fault in.
    uint64_t w = 0, end = 0;  // items written; end of the previous run
    while (w < n) {
      const uint64_t len = next_run(w, literal);
      if (literal) d.fail("new items in an in-order plan reply");
      const uint64_t start = run_start(len);
      if (start < end) d.fail("runs out of order in an in-order plan reply");
      end = start + len;
      for (uint64_t i = start; i < end; ++i, ++w)
        if (w != i) local.items[w] = std::move(local.items[i]);
    }
    local.items.resize(w);
    out.items = std::move(local.items);
  } else {
    std::vector<char> taken(have, 0);
    out.items.clear();
    out.items.reserve(n);
    while (out.items.size() < n) {
      const uint64_t len = next_run(out.items.size(), literal);
      if (literal) {
        for (uint64_t k = 0; k < len; ++k) get_item(d, out.items.emplace_back());
        continue;
      }
      const uint64_t start = run_start(len);
      for (uint64_t i = start; i < start + len; ++i) {
        if (taken[i]) d.fail("a plan reply names a local item twice");
        taken[i] = 1;
        out.items.push_back(std::move(local.items[i]));
      }
    }
  }
  get_tail(d, out);
  finish(d);
}

}  // namespace

std::string encode(const SavePlan& plan) { return encode_plan(plan); }
std::string encode(const LoadPlan& plan) { return encode_plan(plan); }
void decode(std::string_view bytes, SavePlan& plan, std::vector<size_t>* bounds) {
  decode_plan(bytes, plan, bounds);
}
void decode(std::string_view bytes, LoadPlan& plan, std::vector<size_t>* bounds) {
  decode_plan(bytes, plan, bounds);
}

std::string encode_reply(const SavePlan& final_plan, std::string_view local_bytes,
                         const std::vector<size_t>& bounds) {
  return encode_reply_plan(final_plan, local_bytes, bounds);
}
std::string encode_reply(const LoadPlan& final_plan, std::string_view local_bytes,
                         const std::vector<size_t>& bounds) {
  return encode_reply_plan(final_plan, local_bytes, bounds);
}
void decode_reply(std::string_view bytes, SavePlan& local, SavePlan& out) {
  decode_reply_plan(bytes, local, out);
}
void decode_reply(std::string_view bytes, LoadPlan& local, LoadPlan& out) {
  decode_reply_plan(bytes, local, out);
}

namespace {
void put_results(codec::Encoder& e, const std::vector<WriteResult>& results) {
  e.varint(results.size());
  for (const auto& r : results) {
    put_index(e, r.index);
    e.svarint(r.size_in_bytes);
    e.str(r.storage_data.relative_path);
    e.varint(r.storage_data.offset);
    e.varint(r.storage_data.length);
    e.u8(static_cast<uint8_t>(r.storage_data.checksum_type));
    e.u64(r.storage_data.checksum);
  }
}
void get_results(codec::Decoder& d, std::vector<WriteResult>& results) {
  results.resize(d.count("write result"));
  for (auto& r : results) {
    r.index = get_index(d);
    r.size_in_bytes = d.svarint();
    r.storage_data.relative_path = d.str();
    r.storage_data.offset = d.varint();
    r.storage_data.length = d.varint();
    r.storage_data.checksum_type = static_cast<ChecksumType>(d.u8());
    r.storage_data.checksum = d.u64();
  }
}
}  // namespace

std::string encode(const std::vector<WriteResult>& results) {
  codec::Encoder e;
  put_results(e, results);
  return e.take();
}
void decode(std::string_view bytes, std::vector<WriteResult>& results) {
  auto d = decoder(bytes);
  get_results(d, results);
  finish(d);
}

std::string encode(const std::vector<ReplicaRequest>& requests) {
  if (requests.empty()) return std::string();
  codec::Encoder e;
  e.varint(requests.size());
  for (const auto& q : requests) {
    e.u8(q.written ? 1 : 0);
    if (q.written) {
      put_index(e, q.item.index);
      e.u8(static_cast<uint8_t>(q.item.type));
    } else {
      put_item(e, q.item);
    }
  }
  return e.take();
}
void decode(std::string_view bytes, std::vector<ReplicaRequest>& out) {
  out.clear();
  if (bytes.empty()) return;
  auto d = decoder(bytes);
  out.resize(d.count("replica request"));
  for (auto& q : out) {
    q.written = d.u8() != 0;
    if (q.written) {
      q.item.index = get_index(d);
      const uint8_t type = d.u8();
      if (type > 2) d.fail("bad write item type");
      q.item.type = static_cast<WriteItemType>(type);
    } else {
      get_item(d, q.item);
    }
  }
  finish(d);
}

std::string encode(const WriteReport& report) {
  codec::Encoder e;
  put_results(e, report.results);
  e.varint(report.digests.size());
  for (const auto& g : report.digests) {
    put_index(e, g.index);
    e.u64(g.digest);
    e.u8(g.written ? 1 : 0);
  }
  return e.take();
}
void decode(std::string_view bytes, WriteReport& report) {
  auto d = decoder(bytes);
  get_results(d, report.results);
  report.digests.resize(d.count("replica digest"));
  for (auto& g : report.digests) {
    g.index = get_index(d);
    g.digest = d.u64();
    g.written = d.u8() != 0;
  }
  finish(d);
}

std::string encode(const Metadata& metadata) { return serialize_metadata(metadata); }
void decode(std::string_view bytes, Metadata& out) {
  out = deserialize_metadata(bytes, "metadata from the coordinator");
}

std::string encode(const CommitSummary& summary) {
  codec::Encoder e;
  e.u8(summary.whole ? 1 : 0);
  e.u64(summary.bytes);
  e.u64(summary.items);
  std::string out = e.take();
  if (summary.whole) {
    out += serialize_metadata(summary.metadata);
  } else {
    Metadata header;
    header.version = summary.metadata.version;
    header.storage_meta = summary.metadata.storage_meta;
    header.world_size = summary.metadata.world_size;
    header.library_version = summary.metadata.library_version;
    out += serialize_metadata(header);
  }
  return out;
}
void decode(std::string_view bytes, CommitSummary& out) {
  auto d = decoder(bytes.substr(0, std::min<size_t>(bytes.size(), 17)));
  out.whole = d.u8() != 0;
  out.bytes = d.u64();
  out.items = d.u64();
  out.metadata = deserialize_metadata(bytes.substr(17), "metadata from the coordinator");
}

std::string encode(int value) {
  codec::Encoder e;
  e.svarint(value);
  return e.take();
}
void decode(std::string_view bytes, int& out) {
  auto d = decoder(bytes);
  out = static_cast<int>(d.svarint());
  finish(d);
}

std::string encode(const std::string& value) { return value; }
void decode(std::string_view bytes, std::string& out) { out.assign(bytes); }

std::string encode(const std::vector<std::string>& values) {
  codec::Encoder e;
  e.varint(values.size());
  for (const auto& v : values) e.str(v);
  return e.take();
}
void decode(std::string_view bytes, std::vector<std::string>& out) {
  auto d = decoder(bytes);
  const uint64_t n = d.varint();
  if (n > bytes.size()) d.fail("bad string count");
  out.clear();
  out.reserve(n);
  for (uint64_t i = 0; i < n; ++i) out.push_back(d.str());
  finish(d);
}

std::string encode(const std::vector<RankFailure>& failures) {
  codec::Encoder e;
  e.varint(failures.size());
  for (const auto& f : failures) {
    e.svarint(f.rank);
    e.str(f.step);
    e.u8(static_cast<uint8_t>(f.code));
    e.u8(f.retryable ? 1 : 0);
    e.str(f.message);
  }
  return e.take();
}
void decode(std::string_view bytes, std::vector<RankFailure>& out) {
  auto d = decoder(bytes);
  out.resize(d.count("failure"));
  for (auto& f : out) {
    f.rank = static_cast<int>(d.svarint());
    f.step = d.str();
    f.code = static_cast<ErrorCode>(d.u8());
    f.retryable = d.u8() != 0;
    f.message = d.str();
  }
  finish(d);
}

}  // namespace wire
}  // namespace internal
}  // namespace dcp
