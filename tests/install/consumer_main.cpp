#include <ATen/ATen.h>
#include <dcp/dcp.h>
#include <dcp/dist/process_group.h>
#include <dcp/manager/manager.h>
#include <dcp/trainer/trainer.h>

#include <memory>
#include <string>

// A Stateful of one tensor, for the manager.
struct W : dcp::Stateful {
  at::Tensor w = at::zeros({4});
  dcp::StateDict state_dict() override { return {{"w", w}}; }
  void load_state_dict(const dcp::StateDict&) override {}
};

int main(int argc, char** argv) {
  const std::string dir = argv[1];
  dcp::StateDict sd{{"w", at::ones({3})}, {"step", 1}};
  dcp::save(sd, dir + "/plain");
  auto back = dcp::load_all(dir + "/plain");
  if (!at::equal(back["w"].tensor(), at::ones({3}))) return 1;

  // An error thrown inside libdcp_core, caught here by its type (exported
  // typeinfo, dcp/export.h).
  try {
    dcp::load_all(dir + "/missing");
    return 3;
  } catch (const dcp::CheckpointError& e) {
    if (e.root_code() != dcp::ErrorCode::kNotFound) return 4;
  }

  // The manager through the trainer hooks: 3 steps, saved at the end.
  auto opts = dcp::manager::parse_manager_options(
      "checkpoint: {dir: '" + dir + "/managed', save: {every_steps: 0}}", "consumer");
  auto m = std::make_shared<dcp::manager::CheckpointManager>(opts);
  m->register_stateful("w", std::make_shared<W>());
  dcp::trainer::Callbacks cbs;
  cbs.add(std::make_shared<dcp::trainer::CheckpointCallback>(m));
  dcp::trainer::TrainState state;
  cbs.train_begin(state);
  while (state.step < 3) {
    ++state.step;
    cbs.step_end(state);
  }
  cbs.train_end(state);
  return m->committed().size() == 1 && m->committed()[0].step == 3 ? 0 : 2;
}
