// The child of the crash and SIGTERM tests: trains a state that is a
// function of the step, with a CheckpointManager saving every few steps.
//
//   dcp_manager_crash_child DIR EVERY_STEPS PHASE_SLEEP_MS STEP_SLEEP_MS MAX_STEPS [ASYNC]
//
// Prints "RESUMED <step>", "STEP <n>", "PHASE <name> <step>" (from the
// manager's phase callback, which then sleeps PHASE_SLEEP_MS so that a kill
// can land inside the phase), "STOPPED <n>" after a preemption signal, and
// "DONE <n>" at the end. Single process, or a rank of a group when RANK and
// WORLD_SIZE are set (see manager_multiproc_test.cpp).
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "dcp/dcp.h"
#include "dcp/manager/manager.h"

namespace {

class State : public dcp::Stateful {
 public:
  at::Tensor w = at::zeros({256, 256});
  at::Tensor b = at::zeros({1000}, at::kDouble);
  int64_t step = 0;
  void set(int64_t s) {
    step = s;
    w.fill_(static_cast<float>(s));
    b.fill_(s * 0.5);
  }
  dcp::StateDict state_dict() override { return {{"w", w}, {"b", b}, {"step", step}}; }
  void load_state_dict(const dcp::StateDict& sd) override { step = sd.at("step").to_int(); }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr,
                 "usage: %s DIR EVERY_STEPS PHASE_SLEEP_MS STEP_SLEEP_MS MAX_STEPS [ASYNC]\n",
                 argv[0]);
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  dcp::manager::CheckpointManagerOptions o;
  o.dir = argv[1];
  o.save.every_steps = std::stoll(argv[2]);
  const int phase_sleep = std::stoi(argv[3]), step_sleep = std::stoi(argv[4]);
  const int64_t max_steps = std::stoll(argv[5]);
  o.async.enabled = argc <= 6 || std::string(argv[6]) != "sync";
  o.keep.last = 2;
  o.save.at_end = true;
  dcp::manager::CheckpointManager m(o);
  m.set_phase_callback([&](const char* phase, int64_t step) {
    std::printf("PHASE %s %lld\n", phase, static_cast<long long>(step));
    std::fflush(stdout);
    if (phase_sleep > 0) std::this_thread::sleep_for(std::chrono::milliseconds(phase_sleep));
  });
  auto state = std::make_shared<State>();
  m.register_stateful("state", state);
  int64_t step = m.resume();
  // The loaded state must be the state of the loaded step.
  if (step > 0 && !(state->step == step &&
                    at::equal(state->w, at::full({256, 256}, static_cast<float>(step))) &&
                    at::equal(state->b, at::full({1000}, step * 0.5, at::kDouble)))) {
    std::printf("CORRUPT resumed state at step %lld\n", static_cast<long long>(step));
    return 3;
  }
  std::printf("RESUMED %lld\n", static_cast<long long>(step));
  std::fflush(stdout);
  while (step < max_steps) {
    ++step;
    state->set(step);
    std::printf("STEP %lld\n", static_cast<long long>(step));
    std::fflush(stdout);
    if (step_sleep > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_sleep));
    if (m.on_step(step)) {
      std::printf("STOPPED %lld\n", static_cast<long long>(step));
      std::fflush(stdout);
      m.close();
      return 0;
    }
  }
  m.on_train_end(step);
  std::printf("DONE %lld\n", static_cast<long long>(step));
  return 0;
}
