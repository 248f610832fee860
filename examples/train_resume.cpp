// The main example: a small MLP trained on generated data that checkpoints
// with dcp++ every few steps and, when started again, resumes from the
// newest committed checkpoint in its directory.
//
//   train_resume [--dir DIR] [--steps N] [--save-every K] [--stop-after S]
//
// --stop-after S ends the run after S steps of this run (as a preemption
// would); running again continues from the last checkpoint. The data of step
// i depends only on i, so an interrupted-and-resumed run ends with exactly
// the parameters of an uninterrupted one: the last line prints their digest.
#include <dirent.h>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "dcp/dcp.h"

namespace {

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(16, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 1));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

// The model's parameters by name: the tensors themselves, so a load fills
// them in place.
dcp::Dict parameters_of(Net& net) {
  dcp::Dict d;
  for (auto& p : net.named_parameters()) d[p.key()] = p.value();
  return d;
}

// The newest committed "step_<n>" checkpoint under dir, or -1.
int64_t latest_step(const std::string& dir) {
  int64_t best = -1;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("step_", 0) == 0 && dcp::is_committed_checkpoint(dir + "/" + n))
        best = std::max<int64_t>(best, std::stoll(n.substr(5)));
    }
    ::closedir(d);
  }
  return best;
}

void usage(std::FILE* to, const char* prog) {
  std::fprintf(to,
               "usage: %s [--dir DIR] [--steps N] [--save-every K] [--stop-after S]\n"
               "Trains a small MLP with plain dcp::save / dcp::load; started again, it resumes\n"
               "from the newest committed checkpoint in DIR.\n"
               "options:\n"
               "  --dir DIR         the checkpoint directory (default: checkpoints/train_resume)\n"
               "  --steps N         train to this step (default: 200)\n"
               "  --save-every K    save every K steps and at the end (default: 25; >= 1)\n"
               "  --stop-after S    end after S steps of this run, as if preempted (default: "
               "-1: never)\n"
               "  --help, -h        print this and exit\n",
               prog);
}

// --k's value as an integer; exits 2 with the usage when it is not one.
int64_t integer(const char* prog, const std::string& k, const std::string& v) {
  try {
    size_t used = 0;
    const int64_t n = std::stoll(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  std::fprintf(stderr, "%s: %s: '%s' is not an integer\n\n", prog, k.c_str(), v.c_str());
  usage(stderr, prog);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "checkpoints/train_resume";
  int64_t steps = 200, save_every = 25, stop_after = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      usage(stdout, argv[0]);
      return 0;
    }
    const bool known = k == "--dir" || k == "--steps" || k == "--save-every" || k == "--stop-after";
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s '%s'\n\n", argv[0], known ? "no value after" : "unknown option",
                   k.c_str());
      usage(stderr, argv[0]);
      return 2;
    }
    const std::string v = argv[++i];
    if (k == "--dir")
      dir = v;
    else if (k == "--steps")
      steps = integer(argv[0], k, v);
    else if (k == "--save-every")
      save_every = integer(argv[0], k, v);
    else
      stop_after = integer(argv[0], k, v);
  }
  if (save_every < 1) {
    std::fprintf(stderr, "%s: --save-every must be >= 1, not %lld\n\n", argv[0],
                 (long long)save_every);
    usage(stderr, argv[0]);
    return 2;
  }

  torch::manual_seed(0);
  Net net;
  torch::optim::SGD opt(net.parameters(), torch::optim::SGDOptions(0.05));

  int64_t start = 0;
  const int64_t found = latest_step(dir);
  if (found >= 0) {
    dcp::StateDict sd{{"model", parameters_of(net)}, {"step", 0}};
    dcp::load(sd, dir + "/step_" + std::to_string(found));
    start = sd["step"].to_int();
    std::printf("resumed from %s/step_%lld at step %lld\n", dir.c_str(), (long long)found,
                (long long)start);
  } else {
    std::printf("no checkpoint in %s: starting from scratch\n", dir.c_str());
  }

  int64_t done_this_run = 0;
  for (int64_t step = start; step < steps; ++step) {
    // The batch of step i depends only on i.
    torch::manual_seed(1000 + step);
    torch::Tensor x = torch::randn({32, 16});
    torch::Tensor y = x.sum(1, true).sin();
    opt.zero_grad();
    torch::Tensor loss = torch::mse_loss(net.forward(x), y);
    loss.backward();
    opt.step();
    const int64_t next = step + 1;
    if (next % save_every == 0 || next == steps) {
      const std::string path = dir + "/step_" + std::to_string(next);
      dcp::save({{"model", parameters_of(net)}, {"step", next}}, path);
      std::printf("step %4lld  loss %.5f  saved %s\n", (long long)next, loss.item<double>(),
                  path.c_str());
    }
    if (stop_after >= 0 && ++done_this_run >= stop_after && next < steps) {
      std::printf("stopping after %lld steps (as if preempted); run again to resume\n",
                  (long long)done_this_run);
      return 0;
    }
  }
  // A digest of the final parameters (XXH3 over their bytes, in name order).
  std::string bytes;
  for (auto& [name, v] : parameters_of(net)) {
    torch::Tensor t = v.tensor().contiguous();
    bytes.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  }
  dcp::Bytes b{bytes};
  std::printf("trained to step %lld\n", (long long)steps);
  std::printf("final_params_digest=%016llx\n",
              (unsigned long long)std::hash<std::string>{}(b.data));
  return 0;
}
