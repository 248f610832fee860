#pragma once

#include <exception>
#include <string>

#include "dcp/checkpoint.h"
#include "dcp/value.h"

namespace dcp {
namespace internal {
// A copy of `v` in which every Stateful object (at any depth) is replaced by
// its state_dict(), itself resolved. Tensors are shared, not copied.
Value resolve_stateful(const Value& v);

// Takes part in the first round of a save that failed on this rank before
// it began (an async save whose staging threw): the failure reaches every
// rank of options.collectives as the same CheckpointError, which this throws
// too. `step` names where it failed unless `failure` is a CheckpointError.
[[noreturn]] void save_after_failure(const SaveOptions& options, const std::string& step,
                                     std::exception_ptr failure);

// The state dict save() is planning on this thread, which stays alive and
// unchanged until save() returns (planner.h). A planner handed this very
// dict may keep a pointer to it instead of a copy; one handed any other (a
// subclass's renamed copy, a temporary of its own) must copy what it keeps.
// `flat`: save() found nothing nested in it (no dict, list or Stateful
// object), so the planner need not look again.
class SavedStateDict {
 public:
  SavedStateDict(const StateDict& state_dict, bool flat) : previous_(current_) {
    current_ = Lent{&state_dict, flat};
  }
  ~SavedStateDict() { current_ = previous_; }
  SavedStateDict(const SavedStateDict&) = delete;
  SavedStateDict& operator=(const SavedStateDict&) = delete;

  static bool is(const StateDict& state_dict) { return current_.dict == &state_dict; }
  static bool is_flat(const StateDict& state_dict) { return is(state_dict) && current_.flat; }

 private:
  struct Lent {
    const StateDict* dict = nullptr;
    bool flat = false;
  };
  static thread_local Lent current_;
  const Lent previous_;
};
}  // namespace internal
}  // namespace dcp
