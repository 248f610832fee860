#include "dcp/libtorch/progress.h"

#include "dcp/error.h"

namespace dcp {
namespace libtorch {

namespace {

bool is_settable(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kBool:
    case Value::Kind::kInt:
    case Value::Kind::kDouble:
    case Value::Kind::kString:
      return true;
    default:
      return false;
  }
}

int64_t int_field(const StateDict& sd, const char* key) {
  auto it = sd.find(key);
  if (it == sd.end() || it->second.kind() != Value::Kind::kInt)
    throw PlanMismatchError(std::string("Progress: '") + key + "' is missing or not an int");
  return it->second.to_int();
}

}  // namespace

void Progress::set(const std::string& name, Value value) {
  if (name.empty()) throw InvalidArgumentError("Progress: a value needs a name");
  if (!is_settable(value))
    throw InvalidArgumentError("Progress: value '" + name + "' is a " + value.kind_name() +
                               "; only bool, int, double and string are kept");
  values_[name] = std::move(value);
}

const Value& Progress::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw NotFoundError("Progress: no value '" + name + "'");
  return it->second;
}

StateDict Progress::state_dict() {
  List values;
  for (const auto& [name, v] : values_) values.emplace_back(List{name, v});
  return {{"step", step_},
          {"epoch", epoch_},
          {"samples_seen", samples_seen_},
          {"values", std::move(values)}};
}

void Progress::load_state_dict(const StateDict& sd) {
  const int64_t step = int_field(sd, "step");
  const int64_t epoch = int_field(sd, "epoch");
  const int64_t samples = int_field(sd, "samples_seen");
  auto it = sd.find("values");
  if (it == sd.end() || !it->second.is_list())
    throw PlanMismatchError("Progress: 'values' is missing or not a list");
  std::map<std::string, Value> values;
  for (const Value& e : it->second.list()) {
    if (!e.is_list() || e.list().size() != 2 || e.list()[0].kind() != Value::Kind::kString ||
        !is_settable(e.list()[1]))
      throw PlanMismatchError("Progress: 'values' holds " + describe(e) +
                              ", not a [name, value] pair");
    values[e.list()[0].to_string()] = e.list()[1];
  }
  step_ = step;
  epoch_ = epoch;
  samples_seen_ = samples;
  values_ = std::move(values);
}

}  // namespace libtorch
}  // namespace dcp
