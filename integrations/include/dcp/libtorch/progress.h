// Training progress as a dcp::Stateful: step, epoch, samples seen, and any
// named plain values the program adds (a best metric, a run name, ...).
//
//   auto progress = std::make_shared<dcp::libtorch::Progress>();
//   dcp::StateDict sd{..., {"progress", progress}};
//   ...  progress->advance(batch_size);  progress->set("best_loss", 0.31);
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "dcp/export.h"
#include "dcp/value.h"

namespace dcp {
namespace libtorch {

// State dict layout:
//   "step": int, "epoch": int, "samples_seen": int,
//   "values": [[name, value], ...]  (one plain value, in name order)
// The named values are kept as one list rather than one key each, so that a
// checkpoint loads whatever names it holds: a fresh Progress (no values yet)
// takes them all. load_state_dict() replaces the values with the saved ones.
//
// Not thread-safe.
class DCP_LIBTORCH_EXPORT Progress : public Stateful {
 public:
  int64_t step() const { return step_; }
  int64_t epoch() const { return epoch_; }
  int64_t samples_seen() const { return samples_seen_; }
  void set_step(int64_t step) { step_ = step; }
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  void set_samples_seen(int64_t samples) { samples_seen_ = samples; }

  // One finished step of `samples` samples: step + 1, samples_seen + samples.
  void advance(int64_t samples) {
    ++step_;
    samples_seen_ += samples;
  }

  // Sets a named value: a bool, int, double or string (InvalidArgumentError
  // for anything else, and for an empty name).
  void set(const std::string& name, Value value);
  bool contains(const std::string& name) const { return values_.count(name) != 0; }
  // Throws NotFoundError naming the value when there is none.
  const Value& get(const std::string& name) const;
  // Removes a named value; no-op when absent.
  void erase(const std::string& name) { values_.erase(name); }
  const std::map<std::string, Value>& values() const { return values_; }

  StateDict state_dict() override;
  void load_state_dict(const StateDict& state_dict) override;

 private:
  int64_t step_ = 0;
  int64_t epoch_ = 0;
  int64_t samples_seen_ = 0;
  std::map<std::string, Value> values_;
};

}  // namespace libtorch
}  // namespace dcp
