// Planning at scale, simulated in one process: the coordinator's work of a
// save of R ranks of an FSDP-like state dict (issue 16 part 5; the shape of
// pytorch/pytorch#163548, where DCP's pairwise chunk validation takes 200 s
// at 1024 ranks).
//
//   dcp_bench_plan_sim [--ranks 64,256,1024] [--tensors 1000] [--replicated 100]
//                      [--rows 4096] [--dir D] [--repeats N]
//
// The state dict of each simulated rank: `--tensors` 2-D tensors sharded
// along dim 0 over all R ranks (ShardedTensor, one local shard per rank:
// R chunks per tensor, tensors x R chunks in all), `--replicated` small
// tensors every rank holds whole (replicated parameters, which dedup writes
// once and the replica check compares) and two plain values.
//
// Each rank's side runs the real code, one rank after the other, untimed:
// DefaultSavePlanner::set_up_planner + create_local_plan, the file-system
// writer's prepare_local_plan, and the wire encoding of the plan (what the
// rank sends); after the global plan, the rank rebuilds its final plan from
// the coordinator's reply (wire::decode_reply), finish_plan, write results
// as the file-system writer makes them (no data is written), replica
// digests, and the encoding of its write report.
//
// Timed, the coordinator's work, as DistWrapper (dcp/src/dist.h) and save()
// do it:
//   plan round   decode the R plans, create_global_plan (dedup, metadata,
//                chunk validation, flattening maps), prepare_global_plan,
//                encode the R replies
//   commit round decode the R write reports, check_replicas, finish (the
//                storage_data map, check_all_written, serialize_metadata,
//                the .metadata file written and synced in --dir), and the
//                encoding of the metadata that is broadcast
// plan_seconds_sim_<R>ranks is the sum of both rounds (median of
// --repeats). peak_mib_sim: the process's peak RSS during that R (VmHWM,
// reset through /proc/self/clear_refs between R values; the simulated
// ranks' side is transient, one rank at a time, the gathered payloads are
// the coordinator's). bytes_per_chunk_sim: the peak above the RSS before
// that R, per chunk of the metadata. plan_growth_exponent: the slope of
// log(time) against log(chunks) over the R values (1 = linear).
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <tbb/parallel_for.h>
#include <xxhash.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "dcp/dcp.h"
#include "wire.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace wire = dcp::internal::wire;

struct Args {
  std::vector<int> ranks = {64, 256, 1024};
  int tensors = 1000;
  int replicated = 100;
  int64_t rows = 4096;  // rows of the smaller sharded tensors (a multiple of every R)
  std::string dir = "/tmp/dcp_bench_plan_sim";
  int repeats = 1;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "error: %s\nusage: dcp_bench_plan_sim [--ranks 64,256,1024] [--tensors N] "
               "[--replicated N] [--rows N] [--dir D] [--repeats N]\n",
               msg);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const std::string v = argv[++i];
    if (k == "--ranks") {
      a.ranks.clear();
      std::stringstream ss(v);
      for (std::string r; std::getline(ss, r, ',');) a.ranks.push_back(std::stoi(r));
    } else if (k == "--tensors") {
      a.tensors = std::stoi(v);
    } else if (k == "--replicated") {
      a.replicated = std::stoi(v);
    } else if (k == "--rows") {
      a.rows = std::stoll(v);
    } else if (k == "--dir") {
      a.dir = v;
    } else if (k == "--repeats") {
      a.repeats = std::stoi(v);
    } else {
      usage(("unknown option " + k).c_str());
    }
  }
  if (a.ranks.empty() || a.tensors < 1 || a.replicated < 0 || a.repeats < 1) usage("bad values");
  for (int r : a.ranks)
    if (r < 1 || a.rows % r != 0) usage("every R must be >= 1 and divide --rows");
  return a;
}

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// kB fields of /proc/self/status.
int64_t status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  const std::string want = std::string(field) + ":";
  for (std::string line; std::getline(f, line);)
    if (line.rfind(want, 0) == 0) return std::stoll(line.substr(want.size()));
  return -1;
}

void reset_peak() {
  ::malloc_trim(0);
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

// The tensors every simulated rank's state dict refers to (one shard tensor
// per shape, shared by all ranks: planning reads shapes and dtypes only).
struct Model {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> global;  // global size of each sharded tensor
  std::vector<at::Tensor> shard_of;          // its local shard's tensor (shape global/R)
  std::vector<std::string> rep_names;
  std::vector<at::Tensor> rep;  // replicated tensors, the same on every rank
};

Model make_model(const Args& a, int world) {
  // Ten parameters per layer, as in a transformer block: four attention
  // projections and three MLP matrices (4x wider), three more projections.
  static const char* kParams[] = {"attn.q",   "attn.k",   "attn.v",  "attn.o",   "mlp.up",
                                  "mlp.gate", "mlp.down", "attn.q2", "attn.kv2", "proj"};
  const int64_t cols = 64;  // the width does not change planning; small keeps shards small
  Model m;
  at::Tensor small = at::empty({a.rows / world, cols});
  at::Tensor large = at::empty({4 * a.rows / world, cols});
  for (int i = 0; i < a.tensors; ++i) {
    const int p = i % 10;
    m.names.push_back("model.layers." + std::to_string(i / 10) + "." + kParams[p] + ".weight");
    const bool wide = p >= 4 && p <= 6;
    m.global.push_back({wide ? 4 * a.rows : a.rows, cols});
    m.shard_of.push_back(wide ? large : small);
  }
  for (int i = 0; i < a.replicated; ++i) {
    m.rep_names.push_back("model.layers." + std::to_string(i) + ".norm.weight");
    m.rep.push_back(at::full({1024}, 1.0f + i));
  }
  return m;
}

dcp::StateDict rank_state(const Model& m, int rank, int world) {
  dcp::StateDict sd;
  dcp::Dict model, optim;
  for (size_t i = 0; i < m.names.size(); ++i) {
    dcp::ShardedTensor st;
    st.global_size = m.global[i];
    const int64_t rows = m.global[i][0] / world;
    st.local_shards.push_back(dcp::Shard{m.shard_of[i], {rank * rows, 0}});
    sd[m.names[i]] = dcp::Value(std::move(st));
  }
  for (size_t i = 0; i < m.rep.size(); ++i) sd[m.rep_names[i]] = m.rep[i];
  sd["step"] = dcp::Value(int64_t{1000});
  sd["lr"] = dcp::Value(3e-4);
  return sd;
}

// Write results as the file-system writer makes them: one file per rank,
// items back to back. Checksums: XXH3-64 of the data for plain tensors and
// values (the replica check compares them with the other holders'), a
// stand-in for shards (no shard is read).
std::vector<dcp::WriteResult> simulated_results(const dcp::SavePlan& plan,
                                                dcp::SavePlanner& planner) {
  std::vector<dcp::WriteResult> out;
  out.reserve(plan.items.size());
  const std::string file = plan.storage_data + "0.distcp";
  uint64_t offset = 0;
  for (const auto& item : plan.items) {
    dcp::WriteResult r;
    r.index = item.index;
    uint64_t checksum = 0;
    int64_t n = 0;
    if (item.type == dcp::WriteItemType::kShard) {
      n = *item.tensor_storage_size();
      checksum = XXH3_64bits(item.index.offset.data(), item.index.offset.size() * 8);
    } else {
      dcp::WriteData d = planner.resolve_data(item);
      if (const auto* b = std::get_if<dcp::Bytes>(&d)) {
        n = static_cast<int64_t>(b->data.size());
        checksum = XXH3_64bits(b->data.data(), b->data.size());
      } else {
        const at::Tensor t = std::get<at::Tensor>(d).contiguous();
        n = static_cast<int64_t>(t.nbytes());
        checksum = XXH3_64bits(t.data_ptr(), t.nbytes());
      }
    }
    r.size_in_bytes = n;
    r.storage_data = dcp::StorageInfo{file, offset, static_cast<uint64_t>(n),
                                      dcp::ChecksumType::kXXH3_64, checksum};
    offset += static_cast<uint64_t>(n);
    out.push_back(std::move(r));
  }
  return out;
}

struct Run {
  int world = 0;
  size_t chunks = 0, items = 0;
  double local_per_rank = 0;  // one rank's local planning + encoding
  double plan = 0, commit = 0;
  double decode_plans = 0, global = 0, replies = 0;
  double decode_reports = 0, check = 0, finish = 0, encode_md = 0;
  double serialize = 0, storage_map = 0;                          // parts of finish, measured again
  uint64_t metadata_bytes = 0, plan_bytes = 0, report_bytes = 0;  // encoded, all ranks
  int64_t peak_kib = 0, base_kib = 0;
};

Run simulate(const Args& a, int world, dcp::FileSystemWriterOptions wo) {
  Run run;
  run.world = world;
  const Model m = make_model(a, world);
  const std::string dir = a.dir + "/r" + std::to_string(world);
  auto writer = dcp::make_filesystem_writer(dir, wo);
  auto coord = std::make_shared<dcp::DefaultSavePlanner>();
  writer->set_up_storage_writer(true, 0);

  // The ranks' side: local plans, encoded as they travel.
  std::vector<std::string> payloads(world);
  dcp::SavePlan own;
  auto t_local = Clock::now();
  for (int r = 0; r < world; ++r) {
    const dcp::StateDict sd = rank_state(m, r, world);
    std::unique_ptr<dcp::DefaultSavePlanner> holder;
    dcp::DefaultSavePlanner* planner = coord.get();
    if (r != 0) {
      holder = std::make_unique<dcp::DefaultSavePlanner>();
      planner = holder.get();
    }
    planner->set_up_planner(sd, writer->storage_meta(), r == 0);
    dcp::SavePlan plan = writer->prepare_local_plan(planner->create_local_plan());
    run.items += plan.items.size();
    if (r == 0)
      own = std::move(plan);
    else
      payloads[r] = wire::encode(plan);
  }
  run.local_per_rank = since(t_local) / world;
  for (const auto& p : payloads) run.plan_bytes += p.size();

  // Plan round, on the coordinator.
  auto t0 = Clock::now();
  std::vector<dcp::SavePlan> all(world);
  std::vector<std::vector<size_t>> bounds(world);
  tbb::parallel_for(1, world, [&](int r) { wire::decode(payloads[r], all[r], &bounds[r]); });
  all[0] = std::move(own);
  run.decode_plans = since(t0);
  auto t1 = Clock::now();
  auto [plans, md] = coord->create_global_plan(std::move(all));
  plans = writer->prepare_global_plan(std::move(plans));
  run.global = since(t1);
  auto t2 = Clock::now();
  std::vector<std::string> replies(world);
  tbb::parallel_for(
      1, world, [&](int r) { replies[r] = wire::encode_reply(plans[r], payloads[r], bounds[r]); });
  run.replies = since(t2);
  run.plan = since(t0);
  dcp::SavePlan own_final = std::move(plans[0]);
  plans.clear();
  plans.shrink_to_fit();

  // The ranks again: final plans, write results, digests, reports.
  std::vector<std::string> reports(world);
  wire::WriteReport own_report;
  for (int r = 0; r < world; ++r) {
    std::unique_ptr<dcp::DefaultSavePlanner> holder;
    dcp::DefaultSavePlanner* planner = coord.get();
    const dcp::StateDict sd = rank_state(m, r, world);
    dcp::SavePlan final_plan;
    if (r != 0) {
      holder = std::make_unique<dcp::DefaultSavePlanner>();
      planner = holder.get();
      planner->set_up_planner(sd, writer->storage_meta(), false);
      dcp::SavePlan local;
      wire::decode(payloads[r], local);
      wire::decode_reply(replies[r], local, final_plan);
    } else {
      final_plan = std::move(own_final);
    }
    final_plan = planner->finish_plan(std::move(final_plan));
    wire::WriteReport report;
    report.results = simulated_results(final_plan, *planner);
    report.digests = planner->replica_digests(report.results);
    if (r == 0)
      own_report = std::move(report);
    else
      reports[r] = wire::encode(report);
    if (r != 0) {
      std::string().swap(payloads[r]);
      std::string().swap(replies[r]);
    }
  }

  for (const auto& p : reports) run.report_bytes += p.size();
  // Commit round, on the coordinator.
  auto t3 = Clock::now();
  std::vector<wire::WriteReport> got(world);
  tbb::parallel_for(1, world, [&](int r) { wire::decode(reports[r], got[r]); });
  got[0] = std::move(own_report);
  run.decode_reports = since(t3);
  auto t4 = Clock::now();
  std::vector<std::vector<dcp::ReplicaDigest>> digests(world);
  std::vector<std::vector<dcp::WriteResult>> results(world);
  for (int r = 0; r < world; ++r) {
    digests[r] = std::move(got[r].digests);
    results[r] = std::move(got[r].results);
  }
  coord->check_replicas(digests);
  run.check = since(t4);
  auto t5 = Clock::now();
  md.library_version = dcp::kVersion;
  writer->finish(md, results);
  run.finish = since(t5);
  auto t6 = Clock::now();
  const std::string encoded = wire::encode(md);
  run.encode_md = since(t6);
  run.commit = since(t3);
  run.peak_kib = status_kib("VmHWM");  // before the diagnostics' copies
  // Diagnostics (untimed in the rounds): finish's parts, again.
  auto t7 = Clock::now();
  const std::string serialized = dcp::serialize_metadata(md);
  run.serialize = since(t7);
  auto t8 = Clock::now();
  {
    dcp::Metadata copy;
    for (const auto& rank_results : results)
      for (const auto& res : rank_results) copy.storage_data[res.index] = res.storage_data;
  }
  run.storage_map = since(t8);
  run.metadata_bytes = encoded.size();
  run.chunks = md.storage_data.size();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  dcp::FileSystemWriterOptions wo;
  wo.overwrite = true;
  std::vector<Run> runs;
  for (int world : a.ranks) {
    std::vector<Run> reps;
    for (int k = 0; k < a.repeats; ++k) {
      reset_peak();
      const int64_t base = status_kib("VmRSS");
      Run r = simulate(a, world, wo);
      r.base_kib = base;
      reps.push_back(r);
    }
    std::sort(reps.begin(), reps.end(),
              [](const Run& x, const Run& y) { return x.plan + x.commit < y.plan + y.commit; });
    const Run& r = reps[reps.size() / 2];
    std::printf(
        "R=%d: %zu items planned, %zu chunks in the metadata (%.1f MiB encoded); local plan "
        "%.2f ms per rank\n"
        "  plan round %.3f s (decode %.3f, global plan %.3f, replies %.3f); commit round %.3f s "
        "(decode %.3f, replica check %.3f, finish %.3f, encode %.3f)\n"
        "  finish's parts measured again: storage_data map %.3f s, serialize_metadata %.3f s\n"
        "  gathered: plans %.1f MiB, write reports %.1f MiB\n"
        "  peak RSS %.0f MiB (%.0f MiB before), %.0f bytes per chunk\n",
        r.world, r.items, r.chunks, r.metadata_bytes / 1048576.0, r.local_per_rank * 1e3, r.plan,
        r.decode_plans, r.global, r.replies, r.commit, r.decode_reports, r.check, r.finish,
        r.encode_md, r.storage_map, r.serialize, r.plan_bytes / 1048576.0,
        r.report_bytes / 1048576.0, r.peak_kib / 1024.0, r.base_kib / 1024.0,
        (r.peak_kib - r.base_kib) * 1024.0 / static_cast<double>(r.chunks));
    std::fflush(stdout);
    runs.push_back(r);
  }
  std::system(("rm -rf '" + a.dir + "'").c_str());
  // Least-squares slope of log(time) over log(chunks).
  double slope = 0;
  if (runs.size() >= 2) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    const double n = static_cast<double>(runs.size());
    for (const Run& r : runs) {
      const double x = std::log(static_cast<double>(r.chunks)), y = std::log(r.plan + r.commit);
      sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  }
  for (const Run& r : runs) {
    const std::string s = std::to_string(r.world) + "ranks";
    std::printf("plan_seconds_sim_%s=%.3f\n", s.c_str(), r.plan + r.commit);
    std::printf("global_plan_seconds_sim_%s=%.3f\n", s.c_str(), r.plan);
    std::printf("commit_seconds_sim_%s=%.3f\n", s.c_str(), r.commit);
    std::printf("peak_mib_sim_%s=%.0f\n", s.c_str(), r.peak_kib / 1024.0);
    std::printf("bytes_per_chunk_sim_%s=%.0f\n", s.c_str(),
                (r.peak_kib - r.base_kib) * 1024.0 / static_cast<double>(r.chunks));
  }
  if (runs.size() >= 2) std::printf("plan_growth_exponent=%.2f\n", slope);
  return 0;
}
