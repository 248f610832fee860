// Distributed save and load with real ranks over Gloo on loopback: round
// trips, dedup, the resharding matrix, the error discipline, a dead rank.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>

#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

using testing::make_tensor;
using testing::run_ranks;
using testing::RunOptions;

std::shared_ptr<Collectives> group(dist::DistContext& ctx,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  return ctx.collectives(timeout);
}

RunOptions opts(std::vector<std::string> args) {
  RunOptions o;
  o.args = std::move(args);
  o.timeout = std::chrono::seconds(60);
  return o;
}

// ---------------------------------------------------------------------------
// Layouts: which boxes of a 2-D tensor each rank holds.

struct Box {
  std::vector<int64_t> offsets, sizes;
};

// Splits n into `parts` pieces, the first ones one larger.
std::vector<std::pair<int64_t, int64_t>> split(int64_t n, int parts) {
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t at = 0;
  for (int i = 0; i < parts; ++i) {
    int64_t len = n / parts + (i < n % parts ? 1 : 0);
    out.emplace_back(at, len);
    at += len;
  }
  return out;
}

std::vector<Box> layout(const std::string& kind, int world, int rank, int64_t rows, int64_t cols) {
  std::vector<Box> boxes;
  if (kind == "rows") {
    auto [o, n] = split(rows, world)[rank];
    boxes.push_back({{o, 0}, {n, cols}});
  } else if (kind == "cols") {
    auto [o, n] = split(cols, world)[rank];
    boxes.push_back({{0, o}, {rows, n}});
  } else if (kind == "blocks") {
    int gr = 1;
    for (int d = 1; d * d <= world; ++d)
      if (world % d == 0) gr = d;
    const int gc = world / gr;
    auto [ro, rn] = split(rows, gr)[rank / gc];
    auto [co, cn] = split(cols, gc)[rank % gc];
    boxes.push_back({{ro, co}, {rn, cn}});
  } else if (kind == "uneven") {
    // 2*world row bands of growing height, dealt so that each rank holds two
    // bands of different sizes (and some ranks hold adjacent ones).
    const int parts = 2 * world;
    int64_t total_w = parts * (parts + 1) / 2, at = 0;
    for (int i = 0; i < parts; ++i) {
      int64_t len = i + 1 == parts ? rows - at : rows * (i + 1) / total_w;
      const int owner = i < world ? i : parts - 1 - i;
      if (owner == rank && len > 0) boxes.push_back({{at, 0}, {len, cols}});
      at += len;
    }
  } else {
    throw std::runtime_error("unknown layout " + kind);
  }
  return boxes;
}

ShardedTensor shard(const at::Tensor& full, const std::vector<Box>& boxes, bool zeros) {
  ShardedTensor st{full.sizes().vec(), {}};
  for (const auto& b : boxes) {
    at::Tensor piece = full.narrow(0, b.offsets[0], b.sizes[0]).narrow(1, b.offsets[1], b.sizes[1]);
    st.local_shards.push_back(Shard{zeros ? at::zeros_like(piece) : piece.clone(), b.offsets});
  }
  return st;
}

const std::vector<std::string> kLayouts = {"rows", "cols", "blocks", "uneven"};
constexpr int64_t kRows = 13, kCols = 10;

at::Tensor global_tensor(const std::string& kind) {
  return make_tensor(kind == "blocks" ? at::kBFloat16 : at::kFloat, {kRows, kCols},
                     std::hash<std::string>{}(kind) % 1000);
}

// ---------------------------------------------------------------------------
// Round trips

DCP_REGISTER_WORKER(round_trip) {
  const std::string dir = args.at(0);
  const int coordinator = std::stoi(args.at(1));
  const int world = ctx.world_size(), rank = ctx.rank();
  at::Tensor full = make_tensor(at::kFloat, {kRows, kCols}, 1);
  StateDict sd{{"replicated", make_tensor(at::kDouble, {5, 3}, 2)},
               {"sharded", shard(full, layout("rows", world, rank, kRows, kCols), false)},
               {"meta", Dict{{"step", 17}, {"name", "run"}}}};
  SaveOptions so;
  so.checkpoint_id = dir;
  so.collectives = group(ctx);
  so.coordinator_rank = coordinator;
  SaveStats stats;
  so.stats = &stats;
  Metadata md = save(sd, so);
  const Metadata committed = read_metadata(dir);
  EXPECT_EQ(md.world_size, world);
  EXPECT_EQ(committed.state_dict_metadata.size(), 4u);
  // Every rank's stats describe the whole checkpoint.
  EXPECT_EQ(stats.bytes, committed.total_bytes()) << "rank " << rank;
  EXPECT_EQ(stats.items, committed.storage_data.size()) << "rank " << rank;
  if (rank == coordinator) {
    // The coordinator returns the metadata it committed.
    EXPECT_EQ(serialize_metadata(md), serialize_metadata(committed));
  } else {
    // The others, by default, only its header.
    EXPECT_TRUE(md.state_dict_metadata.empty()) << "rank " << rank;
    EXPECT_TRUE(md.storage_data.empty()) << "rank " << rank;
    EXPECT_TRUE(md.planner_data.empty()) << "rank " << rank;
    EXPECT_TRUE(md.storage_meta.has_value() && committed.storage_meta.has_value() &&
                md.storage_meta->save_id == committed.storage_meta->save_id);
    EXPECT_EQ(md.library_version, committed.library_version);
  }
  // Asked for, every rank returns the metadata that was committed (the
  // coordinator's own copy never goes through the wire; the others decode
  // theirs).
  SaveOptions every = so;
  every.checkpoint_id = dir + "_every";
  every.metadata_on_every_rank = true;
  Metadata whole = save(sd, every);
  EXPECT_EQ(serialize_metadata(whole), serialize_metadata(read_metadata(every.checkpoint_id)))
      << "rank " << rank;

  StateDict dest{{"replicated", at::zeros({5, 3}, at::kDouble)},
                 {"sharded", shard(full, layout("rows", world, rank, kRows, kCols), true)},
                 {"meta", Dict{{"step", 0}, {"name", ""}}}};
  LoadOptions lo;
  lo.checkpoint_id = dir;
  lo.collectives = group(ctx);
  lo.coordinator_rank = coordinator;
  load(dest, lo);
  EXPECT_TRUE(Value(dest).equals(Value(sd)));
  return 0;
}

TEST(DistributedTest, RoundTripOnTwoThreeAndFourRanks) {
  for (int world : {2, 3, 4}) {
    testing::TempDir dir;
    const std::string coordinator = std::to_string(world - 1);
    auto r = run_ranks(world, "round_trip", opts({dir.sub("ck"), coordinator}));
    EXPECT_TRUE(r.ok()) << "world " << world << "\n" << r.summary();
    EXPECT_TRUE(is_committed_checkpoint(dir.sub("ck")));
    // The coordinator wrote the metadata: every rank wrote data files of its own.
    for (int rank = 0; rank < world; ++rank) {
      bool found = false;
      for (const auto& f : testing::data_files(dir.sub("ck")))
        found |= f.find("/__" + std::to_string(rank) + "_") != std::string::npos;
      EXPECT_TRUE(found) << "no data file of rank " << rank;
    }
  }
}

DCP_REGISTER_WORKER(group_of_one) {
  StateDict sd{{"w", make_tensor(at::kFloat, {64, 64}, 3)}, {"s", 5}};
  SaveOptions with;
  with.checkpoint_id = args.at(0) + "/group";
  with.collectives = group(ctx);
  save(sd, with);
  save(sd, args.at(0) + "/nodist");
  return 0;
}

TEST(DistributedTest, GroupOfOneWritesWhatNoDistWrites) {
  testing::TempDir dir;
  auto r = run_ranks(1, "group_of_one", opts({dir.path()}));
  ASSERT_TRUE(r.ok()) << r.summary();
  auto a = testing::data_files(dir.sub("group")), b = testing::data_files(dir.sub("nodist"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(testing::read_file(a[i]), testing::read_file(b[i]));
  Metadata ma = read_metadata(dir.sub("group")), mb = read_metadata(dir.sub("nodist"));
  EXPECT_EQ(ma.storage_data, mb.storage_data);
  EXPECT_EQ(ma.planner_data, mb.planner_data);
  EXPECT_EQ(ma.world_size, mb.world_size);
}

// ---------------------------------------------------------------------------
// Dedup

DCP_REGISTER_WORKER(dedup) {
  StateDict sd;
  for (int i = 0; i < 16; ++i)  // the same 16 tensors of 256 KiB on every rank
    sd["layer" + std::to_string(i)] = make_tensor(at::kFloat, {256, 256}, 100 + i);
  SaveOptions so;
  so.checkpoint_id = args.at(0);
  so.collectives = group(ctx);
  if (args.size() > 1) {
    SavePlannerOptions po;
    po.dedup_to_lowest_rank = true;
    so.planner = std::make_shared<DefaultSavePlanner>(po);
  }
  save(sd, so);
  return 0;
}

TEST(DistributedTest, ReplicatedTensorsAreWrittenOnceAndSpread) {
  for (int world : {2, 4}) {
    testing::TempDir dir;
    auto r = run_ranks(world, "dedup", opts({dir.sub("ck")}));
    ASSERT_TRUE(r.ok()) << r.summary();
    Metadata md = read_metadata(dir.sub("ck"));
    EXPECT_EQ(md.storage_data.size(), 16u);
    std::vector<uint64_t> per_rank(world, 0);
    for (const auto& [index, info] : md.storage_data)
      per_rank.at(std::stoi(info.relative_path.substr(2))) += info.length;
    uint64_t total = 0;
    for (uint64_t b : per_rank) total += b;
    EXPECT_EQ(total, 16u * 256 * 256 * 4);
    for (int rank = 0; rank < world; ++rank)
      EXPECT_NEAR(static_cast<double>(per_rank[rank]), static_cast<double>(total) / world,
                  0.1 * total / world)
          << "rank " << rank << " of " << world;
    // On disk too: the data files hold the bytes once.
    uint64_t on_disk = 0;
    for (const auto& f : testing::data_files(dir.sub("ck"))) {
      struct stat st;
      ::stat(f.c_str(), &st);
      on_disk += st.st_size;
    }
    EXPECT_LT(on_disk, total + total / 50);
    // Loading gives the values back.
    StateDict back = load_all(dir.sub("ck"));
    EXPECT_TRUE(at::equal(back["layer3"].tensor(), make_tensor(at::kFloat, {256, 256}, 103)));
  }
  // The other policy: everything from the lowest rank.
  testing::TempDir dir;
  auto r = run_ranks(2, "dedup", opts({dir.sub("ck"), "lowest"}));
  ASSERT_TRUE(r.ok()) << r.summary();
  for (const auto& [index, info] : read_metadata(dir.sub("ck")).storage_data)
    EXPECT_EQ(info.relative_path.substr(0, 4), "__0_");
}

// ---------------------------------------------------------------------------
// Resharding: saved at 4 ranks in four layouts, loaded at 1..4 ranks in others.

DCP_REGISTER_WORKER(reshard_save) {
  StateDict sd;
  for (const auto& kind : kLayouts)
    sd["w_" + kind] =
        shard(global_tensor(kind), layout(kind, ctx.world_size(), ctx.rank(), kRows, kCols), false);
  sd["full"] = global_tensor("full");  // a plain (replicated) tensor
  SaveOptions so;
  so.checkpoint_id = args.at(0);
  so.collectives = group(ctx);
  save(sd, so);
  return 0;
}

DCP_REGISTER_WORKER(reshard_load) {
  const int world = ctx.world_size(), rank = ctx.rank();
  StateDict dest;
  // Each key is loaded in a layout other than the one it was saved in.
  for (size_t i = 0; i < kLayouts.size(); ++i) {
    const std::string& saved = kLayouts[i];
    const std::string& wanted = kLayouts[(i + 1) % kLayouts.size()];
    dest["w_" + saved] =
        shard(global_tensor(saved), layout(wanted, world, rank, kRows, kCols), true);
  }
  dest["full"] = shard(global_tensor("full"), layout("cols", world, rank, kRows, kCols), true);
  LoadOptions lo;
  lo.checkpoint_id = args.at(0);
  lo.collectives = group(ctx);
  load(dest, lo);
  for (const auto& [key, v] : dest) {
    at::Tensor full = global_tensor(key == "full" ? "full" : key.substr(2));
    for (const Shard& s : v.sharded().local_shards) {
      at::Tensor want =
          full.narrow(0, s.offsets[0], s.tensor.size(0)).narrow(1, s.offsets[1], s.tensor.size(1));
      EXPECT_TRUE(at::equal(s.tensor, want)) << key << " at rank " << rank << " of " << world;
    }
  }
  // Sharded -> one full tensor on every rank.
  StateDict whole;
  for (const auto& kind : kLayouts) whole["w_" + kind] = at::zeros_like(global_tensor(kind));
  LoadOptions lo2 = lo;
  lo2.strict = false;  // "full" is not wanted here
  load(whole, lo2);
  for (const auto& kind : kLayouts)
    EXPECT_TRUE(at::equal(whole["w_" + kind].tensor(), global_tensor(kind))) << kind;
  return 0;
}

TEST(DistributedTest, ReshardingMatrix) {
  testing::TempDir dir;
  auto saved = run_ranks(4, "reshard_save", opts({dir.sub("ck")}));
  ASSERT_TRUE(saved.ok()) << saved.summary();
  for (int world : {1, 2, 3, 4}) {
    auto r = run_ranks(world, "reshard_load", opts({dir.sub("ck")}));
    EXPECT_TRUE(r.ok()) << "load at " << world << " ranks\n" << r.summary();
  }
  // And in this process, without any group: the same checkpoint, full tensors.
  StateDict all = load_all(dir.sub("ck"));
  for (const auto& kind : kLayouts)
    EXPECT_TRUE(at::equal(all["w_" + kind].tensor(), global_tensor(kind)));
}

// ---------------------------------------------------------------------------
// The error discipline: a failure on one rank in one step reaches every rank.

class ThrowingSavePlanner : public DefaultSavePlanner {
 public:
  ThrowingSavePlanner(std::string step, bool me) : step_(std::move(step)), me_(me) {}
  SavePlan create_local_plan() override {
    if (me_ && step_ == "local_plan") throw InvalidArgumentError("injected failure in local_plan");
    return DefaultSavePlanner::create_local_plan();
  }
  std::pair<std::vector<SavePlan>, Metadata> create_global_plan(std::vector<SavePlan> p) override {
    if (me_ && step_ == "global_plan")
      throw InvalidArgumentError("injected failure in global_plan");
    return DefaultSavePlanner::create_global_plan(std::move(p));
  }

 private:
  std::string step_;
  bool me_;
};

class ThrowingWriter : public StorageWriterWrapper {
 public:
  ThrowingWriter(std::shared_ptr<StorageWriter> w, std::string step, bool me)
      : StorageWriterWrapper(std::move(w)), step_(std::move(step)), me_(me) {}
  std::future<std::vector<WriteResult>> write_data(const SavePlan& p, SavePlanner& pl) override {
    if (me_ && step_ == "write") throw StorageError("injected failure in write", 5);
    return StorageWriterWrapper::write_data(p, pl);
  }
  void finish(Metadata& md, const std::vector<std::vector<WriteResult>>& r) override {
    if (me_ && step_ == "finish") throw StorageError("injected failure in finish", 28);
    StorageWriterWrapper::finish(md, r);
  }

 private:
  std::string step_;
  bool me_;
};

class ThrowingReader : public StorageReaderWrapper {
 public:
  using StorageReaderWrapper::StorageReaderWrapper;
  std::future<void> read_data(const LoadPlan&, LoadPlanner&) override {
    throw CorruptionError("injected failure in read");
  }
};

DCP_REGISTER_WORKER(fail_in_step) {
  const std::string dir = args.at(0), step = args.at(1);
  const int failing = std::stoi(args.at(2));
  const bool me = ctx.rank() == failing;
  StateDict sd{{"w", shard(global_tensor("rows"),
                           layout("rows", ctx.world_size(), ctx.rank(), kRows, kCols), false)},
               {"r", at::ones({3})}};
  std::string error;
  try {
    if (step == "read") {
      SaveOptions so;
      so.checkpoint_id = dir + "/ck";
      so.collectives = group(ctx);
      save(sd, so);
      LoadOptions lo;
      lo.collectives = group(ctx);
      auto reader = make_filesystem_reader(dir + "/ck");
      lo.storage_reader = me ? std::make_shared<ThrowingReader>(reader) : reader;
      load(sd, lo);
    } else {
      SaveOptions so;
      so.collectives = group(ctx);
      so.planner = std::make_shared<ThrowingSavePlanner>(step, me);
      so.storage_writer =
          std::make_shared<ThrowingWriter>(make_filesystem_writer(dir + "/ck"), step, me);
      save(sd, so);
    }
    ADD_FAILURE() << "no error on rank " << ctx.rank();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.failures().size(), 1u) << e.what();
    EXPECT_EQ(e.failures().at(0).rank, failing) << e.what();
    EXPECT_NE(e.failures().at(0).message.find("injected failure in " + step), std::string::npos)
        << e.what();
    error = e.what();
  }
  std::ofstream(dir + "/error_" + std::to_string(ctx.rank()) + ".txt") << error;
  return 0;
}

TEST(DistributedTest, AFailureOnOneRankInAnyStepReachesEveryRank) {
  const int world = 3;
  for (auto [step, failing] : std::vector<std::pair<std::string, int>>{
           {"local_plan", 2}, {"global_plan", 0}, {"write", 1}, {"finish", 0}, {"read", 2}}) {
    testing::TempDir dir;
    auto r = run_ranks(world, "fail_in_step", opts({dir.path(), step, std::to_string(failing)}));
    EXPECT_TRUE(r.ok()) << step << "\n" << r.summary();
    const std::string first = testing::read_file(dir.sub("error_0.txt"));
    EXPECT_NE(first.find("rank " + std::to_string(failing)), std::string::npos) << first;
    for (int rank = 1; rank < world; ++rank)
      EXPECT_EQ(testing::read_file(dir.sub("error_" + std::to_string(rank) + ".txt")), first)
          << step << ": rank " << rank << " saw another error";
    if (step != "read") EXPECT_FALSE(is_committed_checkpoint(dir.sub("ck"))) << step;
  }
}

// ---------------------------------------------------------------------------
// A rank killed mid-save: the others fail with a timeout error, in time.

class StallingWriter : public StorageWriterWrapper {
 public:
  using StorageWriterWrapper::StorageWriterWrapper;
  std::future<std::vector<WriteResult>> write_data(const SavePlan& p, SavePlanner& pl) override {
    testing::mark("writing");
    std::this_thread::sleep_for(std::chrono::seconds(60));  // killed before this ends
    return StorageWriterWrapper::write_data(p, pl);
  }
};

// Rank 1 stalls in write_data: the test kills it ("killed") or leaves it
// hanging ("hung"). The other ranks must fail in time: with a timeout error
// for a hung rank, with a lost peer for a killed one.
DCP_REGISTER_WORKER(stalled_rank) {
  const auto timeout = std::chrono::milliseconds(std::stoi(args.at(1)));
  const bool hung = args.at(2) == "hung";
  SaveOptions so;
  so.collectives = group(ctx, timeout);
  auto writer = make_filesystem_writer(args.at(0));
  so.storage_writer = ctx.rank() == 1 ? std::make_shared<StallingWriter>(writer) : writer;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    save({{"w", at::ones({1000})}}, so);
    ADD_FAILURE() << "save succeeded without rank 1";
  } catch (const CheckpointError& e) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rank %d failed after %.2f s: %s\n", ctx.rank(), secs, e.what());
    // Hung: a timeout; killed: its connection closed, long before the timeout.
    EXPECT_EQ(e.root_code(), hung ? ErrorCode::kTimeout : ErrorCode::kPeerLost) << e.what();
    EXPECT_EQ(e.retryable(), hung) << e.what();
    if (hung) EXPECT_GE(secs, timeout.count() / 1000.0 * 0.9);  // it waited, then gave up
    EXPECT_LT(secs, timeout.count() / 1000.0 + 5.0);
    if (hung) std::_Exit(::testing::Test::HasFailure() ? 1 : 0);  // do not wait for rank 1
  }
  return 0;
}

TEST(DistributedTest, AHungRankMakesTheOthersTimeOut) {
  testing::TempDir dir;
  RunOptions o = opts({dir.sub("ck"), "2000", "hung"});
  o.pg_timeout = std::chrono::milliseconds(2000);
  o.timeout = std::chrono::seconds(8);
  auto r = run_ranks(2, "stalled_rank", o);
  EXPECT_EQ(r.ranks[0].exit_code, 0) << r.summary();
  EXPECT_LT(r.ranks[0].elapsed.count(), 7000) << r.summary();
  EXPECT_FALSE(is_committed_checkpoint(dir.sub("ck")));
}

TEST(DistributedTest, ARankKilledMidSaveMakesTheOthersFail) {
  testing::TempDir dir;
  RunOptions o = opts({dir.sub("ck"), "3000", "killed"});
  o.pg_timeout = std::chrono::milliseconds(3000);
  o.kill_rank = 1;
  o.kill_at_mark = "writing";
  o.kill_delay = std::chrono::milliseconds(300);
  auto r = run_ranks(3, "stalled_rank", o);
  EXPECT_FALSE(r.timed_out) << r.summary();
  EXPECT_TRUE(r.ranks[1].killed_by_harness) << r.summary();
  EXPECT_EQ(r.ranks[0].exit_code, 0) << r.summary();
  EXPECT_EQ(r.ranks[2].exit_code, 0) << r.summary();
  EXPECT_FALSE(is_committed_checkpoint(dir.sub("ck")));
}

// ---------------------------------------------------------------------------
// Strict loads of disjoint parts: a key some rank asked for is not unexpected.

DCP_REGISTER_WORKER(parts_save) {
  StateDict sd{
      {"model",
       Dict{{"w", make_tensor(at::kFloat, {3, 2}, 1)}, {"b", make_tensor(at::kFloat, {2}, 2)}}},
      {"optim", Dict{{"m", shard(make_tensor(at::kDouble, {6, 2}, 3),
                                 layout("rows", ctx.world_size(), ctx.rank(), 6, 2), false)},
                     {"step", 7}}},
      {"extra", make_tensor(at::kLong, {2}, 4)}};
  SaveOptions so;
  so.checkpoint_id = args.at(0);
  so.collectives = group(ctx);
  save(sd, so);
  return 0;
}

// Rank 0 loads the model, rank 1 the optimizer (a pipeline, or a model and
// its optimizer on different ranks), "extra" the last rank (or nobody, in
// the modes "nobody", "missing" and "lax"). In "missing" and "lax" rank 1
// also wants "optim.v", which the checkpoint lacks. Each rank writes what
// it got to result_<rank>.txt.
DCP_REGISTER_WORKER(parts_load) {
  const std::string dir = args.at(0), mode = args.at(1);
  const int rank = ctx.rank(), last = ctx.world_size() - 1;
  StateDict dest;
  if (rank == 0) dest["model"] = Dict{{"w", at::zeros({3, 2})}, {"b", at::zeros({2})}};
  if (rank == 1) {
    dest["optim"] = Dict{{"m", at::zeros({6, 2}, at::kDouble)}, {"step", 0}};
    if (mode == "missing" || mode == "lax") dest["optim"].dict()["v"] = at::zeros({1});
  }
  if (rank == last && mode == "strict") dest["extra"] = at::zeros({2}, at::kLong);
  LoadOptions lo;
  lo.checkpoint_id = dir + "/ck";
  lo.collectives = group(ctx);
  lo.strict = mode != "lax";
  std::string result;
  try {
    LoadResult r = load(dest, lo);
    result = "unexpected:";
    for (const auto& k : r.unexpected_keys) result += " " + k;
    result += "; missing:";
    for (const auto& k : r.missing_keys) result += " " + k;
    if (rank == 0)
      EXPECT_TRUE(
          at::equal(dest["model"].dict()["w"].tensor(), make_tensor(at::kFloat, {3, 2}, 1)));
    if (rank == 1) {
      EXPECT_TRUE(
          at::equal(dest["optim"].dict()["m"].tensor(), make_tensor(at::kDouble, {6, 2}, 3)));
      EXPECT_EQ(dest["optim"].dict()["step"].to_int(), 7);
    }
  } catch (const CheckpointError& e) {
    result = e.what();
  }
  std::ofstream(dir + "/result_" + std::to_string(rank) + ".txt") << result;
  return 0;
}

TEST(DistributedTest, StrictLoadsOfDisjointPartsAcrossRanks) {
  for (int world : {2, 3}) {
    testing::TempDir dir;
    auto saved = run_ranks(world, "parts_save", opts({dir.sub("ck")}));
    ASSERT_TRUE(saved.ok()) << saved.summary();
    auto results = [&](const std::string& mode) {
      auto r = run_ranks(world, "parts_load", opts({dir.path(), mode}));
      EXPECT_TRUE(r.ok()) << mode << " at " << world << " ranks\n" << r.summary();
      std::vector<std::string> out;
      for (int rank = 0; rank < world; ++rank)
        out.push_back(testing::read_file(dir.sub("result_" + std::to_string(rank) + ".txt")));
      return out;
    };
    // Every key is someone's: a strict load succeeds on every rank.
    for (const auto& r : results("strict")) EXPECT_EQ(r, "unexpected:; missing:") << world;
    // A key nobody asked for: every rank fails with the same error naming it.
    auto nobody = results("nobody");
    EXPECT_TRUE(nobody[0].find("in the checkpoint but not in any rank's state dict: 'extra'") !=
                std::string::npos)
        << nobody[0];
    for (const auto& r : nobody) EXPECT_EQ(r, nobody[0]);
    // A missing key is its rank's: named with the rank, in the same error on every rank.
    auto missing = results("missing");
    EXPECT_TRUE(missing[0].find("missing from the checkpoint: 'optim.v' (rank 1)") !=
                std::string::npos)
        << missing[0];
    for (const auto& r : missing) EXPECT_EQ(r, missing[0]);
    // Not strict: the same unexpected keys on every rank; missing keys per rank.
    auto lax = results("lax");
    for (int rank = 0; rank < world; ++rank)
      EXPECT_EQ(lax[rank],
                rank == 1 ? "unexpected: extra; missing: optim.v" : "unexpected: extra; missing:")
          << "rank " << rank << " of " << world;
  }
}

// A c10::Error (a bad view) in one rank's load planner reaches every rank
// as the same CheckpointError, without C++ backtrace.
class BadViewLoadPlanner : public DefaultLoadPlanner {
 public:
  LoadPlan create_local_plan() override {
    at::ones({2}).view({3});
    return DefaultLoadPlanner::create_local_plan();
  }
};

DCP_REGISTER_WORKER(c10_error) {
  const std::string dir = args.at(0);
  StateDict sd{{"w", at::ones({4})}};
  SaveOptions so;
  so.checkpoint_id = dir + "/ck";
  so.collectives = group(ctx);
  save(sd, so);
  LoadOptions lo;
  lo.checkpoint_id = dir + "/ck";
  lo.collectives = group(ctx);
  if (ctx.rank() == 1) lo.planner = std::make_shared<BadViewLoadPlanner>();
  std::string error;
  try {
    load(sd, lo);
    ADD_FAILURE() << "no error on rank " << ctx.rank();
  } catch (const CheckpointError& e) {
    error = e.what();
  }
  std::ofstream(dir + "/error_" + std::to_string(ctx.rank()) + ".txt") << error;
  return 0;
}

TEST(DistributedTest, AC10ErrorOnOneRankReachesEveryRankWithoutBacktrace) {
  testing::TempDir dir;
  auto r = run_ranks(3, "c10_error", opts({dir.path()}));
  EXPECT_TRUE(r.ok()) << r.summary();
  const std::string first = testing::read_file(dir.sub("error_0.txt"));
  EXPECT_NE(first.find("rank 1 in plan:local (internal): shape '[3]' is invalid"),
            std::string::npos)
      << first;
  EXPECT_EQ(first.find("Exception raised from"), std::string::npos) << first;
  EXPECT_EQ(first.find("frame #"), std::string::npos) << first;
  for (int rank = 1; rank < 3; ++rank)
    EXPECT_EQ(testing::read_file(dir.sub("error_" + std::to_string(rank) + ".txt")), first);
}

}  // namespace
}  // namespace dcp
