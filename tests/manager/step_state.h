// A training state whose every value is a function of its step, so that a
// loaded checkpoint can be checked whole (damaged_test, manager_memory_test).
#pragma once

#include <ATen/ATen.h>

#include "dcp/value.h"

namespace dcp {
namespace manager {

class StepState : public Stateful {
 public:
  at::Tensor w = at::zeros({64, 32});
  int64_t step = 0;
  void set(int64_t s) {
    step = s;
    w.fill_(static_cast<float>(s));
  }
  bool consistent() const { return at::equal(w, at::full({64, 32}, static_cast<float>(step))); }
  StateDict state_dict() override { return {{"w", w}, {"step", step}}; }
  void load_state_dict(const StateDict& sd) override { step = sd.at("step").to_int(); }
};

}  // namespace manager
}  // namespace dcp
