// Shared by the training examples: the model, the generated data set, the
// parameter digest and a tiny argument parser. Examples only: not a library.
#pragma once

#include <openssl/evp.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dcp/libtorch/adapters.h"
#include "dcp/manager/manager.h"

namespace example {

// A small MLP: 16 -> 64 -> 64 -> 1, with dropout (so the RNG state matters).
struct Mlp : torch::nn::Module {
  Mlp() {
    fc1 = register_module("fc1", torch::nn::Linear(16, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 64));
    out = register_module("out", torch::nn::Linear(64, 1));
    drop = register_module("drop", torch::nn::Dropout(0.1));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(fc1(x));
    x = drop(torch::relu(fc2(x)));
    return out(x);
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, out{nullptr};
  torch::nn::Dropout drop{nullptr};
};

// The data set: `n` samples of 16 features and a target, the same for a seed.
struct Dataset {
  torch::Tensor x, y;
  Dataset(int64_t n, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    x = at::randn({n, 16}, gen);
    y = (x.sum(1, true) * 0.5).sin() + 0.1 * at::randn({n, 1}, gen);
  }
};

// The next batch's sample indices; a finished epoch starts the next one.
inline torch::Tensor next_batch(dcp::libtorch::ResumableSampler& sampler) {
  std::optional<std::vector<int64_t>> batch = sampler.next_batch();
  if (!batch) {
    sampler.next_epoch();
    batch = sampler.next_batch();
    if (!batch) throw std::runtime_error("the sampler has no batch in an epoch");
  }
  return torch::tensor(*batch, torch::kLong);
}

// SHA-256 over named tensors' names and bytes, in name order (OpenSSL).
inline std::string sha256_hex(const std::map<std::string, torch::Tensor>& tensors) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (auto& [name, t] : tensors) {
    torch::Tensor c = t.detach().contiguous();
    EVP_DigestUpdate(ctx, name.data(), name.size());
    EVP_DigestUpdate(ctx, c.data_ptr(), c.nbytes());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

// SHA-256 over a module's parameters (names and bytes, in name order).
inline std::string params_sha256(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> sorted;
  for (auto& p : m.named_parameters()) sorted[p.key()] = p.value();
  return sha256_hex(sorted);
}

// One line on what this run's checkpoints cost the training loop.
inline void print_save_summary(const std::vector<dcp::manager::SaveStatistics>& stats) {
  if (stats.empty()) return;
  std::vector<double> blocking, durable;
  for (auto& s : stats) {
    blocking.push_back(s.blocking_seconds * 1e3);
    durable.push_back(s.durable_seconds * 1e3);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "checkpoints saved by this run: %zu; median %.2f ms blocking the loop, %.2f ms "
      "until durable; %.2f MB each\n",
      stats.size(), median(blocking), median(durable), stats.back().bytes / 1e6);
}

// --key value arguments with defaults, as a tool takes them: --help (or -h)
// prints `usage` and the options with their defaults to stdout and exits 0;
// an unknown option, or one without its value, is an error that prints the
// same to stderr and exits 2.
class Args {
 public:
  // `help`: a line on each option (by name), shown by --help.
  Args(int argc, char** argv, std::map<std::string, std::string> defaults, std::string usage = "",
       std::map<std::string, std::string> help = {})
      : values_(std::move(defaults)), usage_(std::move(usage)), help_(std::move(help)) {
    for (int i = 1; i < argc; ++i) {
      std::string k = argv[i];
      if (k == "--help" || k == "-h") {
        print_usage(stdout, argv[0]);
        std::exit(0);
      }
      const bool known = k.rfind("--", 0) == 0 && values_.count(k.substr(2));
      if (!known || i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s '%s'\n\n", argv[0],
                     known ? "no value after" : "unknown option", k.c_str());
        print_usage(stderr, argv[0]);
        std::exit(2);
      }
      values_[k.substr(2)] = argv[++i];
    }
  }
  void print_usage(std::FILE* to, const char* prog) const {
    std::fprintf(to, "usage: %s [--option value]...\n", prog);
    if (!usage_.empty()) std::fprintf(to, "%s\n", usage_.c_str());
    std::fprintf(to, "options:\n");
    for (auto& kv : values_) {
      auto h = help_.find(kv.first);
      std::fprintf(to, "  --%-12s %s (default: %s)\n", kv.first.c_str(),
                   h == help_.end() ? "" : h->second.c_str(),
                   kv.second.empty() ? "none" : kv.second.c_str());
    }
    std::fprintf(to, "  --help, -h     print this and exit\n");
  }
  const std::string& str(const std::string& k) const { return values_.at(k); }
  // The value of --k as an integer; exits with a message when it is not one.
  int64_t num(const std::string& k) const {
    const std::string& v = values_.at(k);
    try {
      size_t used = 0;
      int64_t n = std::stoll(v, &used);
      if (used == v.size()) return n;
    } catch (const std::exception&) {
    }
    std::fprintf(stderr, "--%s: '%s' is not an integer\n", k.c_str(), v.c_str());
    std::exit(2);
  }

 private:
  std::map<std::string, std::string> values_;
  std::string usage_;
  std::map<std::string, std::string> help_;
};

// The options both training examples take.
struct TrainArgs {
  std::string config;   // --config: the manager's YAML policy
  std::string dir;      // --dir: the checkpoint directory ("": the config's)
  int64_t steps;        // --steps: train to this step
  int64_t seed;         // --seed: model, data and shuffling
  int64_t stop_after;   // --stop-after: SIGTERM after this many steps of this run (<= 0: never)
  int64_t print_every;  // --print-every: a progress line every N steps (0: none)
};

// `usage`: what the program does, printed by --help above the options.
inline TrainArgs parse_train_args(int argc, char** argv, const std::string& default_dir,
                                  int64_t default_steps, const std::string& usage = "") {
  Args a(argc, argv,
         {{"config", "configs/example.yaml"},
          {"dir", default_dir},
          {"steps", std::to_string(default_steps)},
          {"seed", "0"},
          {"stop-after", "-1"},
          {"print-every", "20"}},
         usage,
         {{"config", "the CheckpointManager's YAML policy (configs/default.yaml: every key)"},
          {"dir", "the checkpoint directory (else $DCP_CHECKPOINT_DIR, else the config's)"},
          {"steps", "train to this step"},
          {"seed", "model, data and shuffling"},
          {"stop-after", "send itself SIGTERM after this many steps of this run (< 0: never)"},
          {"print-every", "a progress line every N steps (0: none)"}});
  return {a.str("config"), a.str("dir"),        a.num("steps"),
          a.num("seed"),   a.num("stop-after"), a.num("print-every")};
}

}  // namespace example
