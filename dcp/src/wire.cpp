#include "wire.h"

#include "codec.h"

namespace dcp {
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

}  // namespace

std::string encode(const SavePlan& plan) {
  codec::Encoder e;
  e.varint(plan.items.size());
  for (const auto& it : plan.items) {
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
  e.str(plan.storage_data);
  e.str(plan.planner_data);
  e.u8(plan.usable ? 1 : 0);
  return e.take();
}

void decode(std::string_view bytes, SavePlan& plan) {
  auto d = decoder(bytes);
  plan.items.resize(d.count("write item"));
  for (auto& it : plan.items) {
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
  plan.storage_data = d.str();
  plan.planner_data = d.str();
  plan.usable = d.u8() != 0;
  finish(d);
}

std::string encode(const LoadPlan& plan) {
  codec::Encoder e;
  e.varint(plan.items.size());
  for (const auto& it : plan.items) {
    e.u8(static_cast<uint8_t>(it.type));
    put_index(e, it.dest_index);
    e.ints(it.dest_offsets);
    put_index(e, it.storage_index);
    e.ints(it.storage_offsets);
    e.ints(it.lengths);
  }
  e.str(plan.storage_data);
  e.str(plan.planner_data);
  return e.take();
}

void decode(std::string_view bytes, LoadPlan& plan) {
  auto d = decoder(bytes);
  plan.items.resize(d.count("read item"));
  for (auto& it : plan.items) {
    const uint8_t type = d.u8();
    if (type > 1) d.fail("bad read item type");
    it.type = static_cast<LoadItemType>(type);
    it.dest_index = get_index(d);
    it.dest_offsets = d.ints();
    it.storage_index = get_index(d);
    it.storage_offsets = d.ints();
    it.lengths = d.ints();
  }
  plan.storage_data = d.str();
  plan.planner_data = d.str();
  finish(d);
}

std::string encode(const std::vector<WriteResult>& results) {
  codec::Encoder e;
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
  return e.take();
}

void decode(std::string_view bytes, std::vector<WriteResult>& results) {
  auto d = decoder(bytes);
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
  finish(d);
}

std::string encode(const Metadata& metadata) { return serialize_metadata(metadata); }
void decode(std::string_view bytes, Metadata& out) {
  out = deserialize_metadata(bytes, "metadata from the coordinator");
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

std::string encode(const std::vector<RankFailure>& failures) {
  codec::Encoder e;
  e.varint(failures.size());
  for (const auto& f : failures) {
    e.svarint(f.rank);
    e.str(f.step);
    e.u8(static_cast<uint8_t>(f.code));
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
    f.message = d.str();
  }
  finish(d);
}

}  // namespace wire
}  // namespace dcp
