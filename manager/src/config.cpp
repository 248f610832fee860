// YAML -> CheckpointManagerOptions. The only file that sees yaml-cpp.
#include <yaml-cpp/yaml.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "dcp/error.h"
#include "dcp/manager/options.h"

namespace dcp {
namespace manager {

SavePolicy::SavePolicy() : on_signals{SIGTERM, SIGUSR1} {}

namespace {

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& key,
                         const std::string& what) const {
    std::string where = source_;
    if (node.IsDefined() && node.Mark().line >= 0)
      where += ":" + std::to_string(node.Mark().line + 1);
    throw ConfigError(where + ": " + key + ": " + what);
  }

  // Checks that `node` is a map with no keys outside `known`.
  void map(const YAML::Node& node, const std::string& key, std::set<std::string> known) const {
    if (!node.IsMap()) fail(node, key, "must be a mapping");
    for (const auto& kv : node) {
      const std::string k = kv.first.as<std::string>();
      if (!known.count(k)) {
        std::string list;
        for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
        fail(kv.first, key.empty() ? k : key + "." + k, "unknown key (known: " + list + ")");
      }
    }
  }

  template <typename T>
  T scalar(const YAML::Node& node, const std::string& key, const char* type) const {
    if (!node.IsScalar()) fail(node, key, std::string("must be ") + type);
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      fail(node, key, std::string("must be ") + type + ", not '" + node.Scalar() + "'");
    }
  }

  int64_t integer(const YAML::Node& n, const std::string& key, int64_t min) const {
    int64_t v = scalar<int64_t>(n, key, "an integer");
    if (v < min) fail(n, key, "must be >= " + std::to_string(min) + ", not " + std::to_string(v));
    return v;
  }
  double seconds(const YAML::Node& n, const std::string& key) const {
    double v = scalar<double>(n, key, "a number of seconds");
    if (!(v >= 0)) fail(n, key, "must be >= 0, not " + n.Scalar());
    return v;
  }
  bool boolean(const YAML::Node& n, const std::string& key) const {
    return scalar<bool>(n, key, "true or false");
  }
  std::string string(const YAML::Node& n, const std::string& key) const {
    return scalar<std::string>(n, key, "a string");
  }
  std::vector<std::string> strings(const YAML::Node& n, const std::string& key) const {
    if (!n.IsSequence()) fail(n, key, "must be a list");
    std::vector<std::string> out;
    for (size_t i = 0; i < n.size(); ++i)
      out.push_back(string(n[i], key + "[" + std::to_string(i) + "]"));
    return out;
  }

 private:
  std::string source_;
};

CheckpointManagerOptions parse(const YAML::Node& root, const Reader& r) {
  CheckpointManagerOptions o;
  if (!root.IsDefined() || root.IsNull()) return o;
  r.map(root, "", {"checkpoint"});
  const YAML::Node c = root["checkpoint"];
  if (!c.IsDefined() || c.IsNull()) return o;
  r.map(c, "checkpoint", {"dir", "save", "async", "keep", "resume", "storage", "on_error"});

  if (c["dir"]) {
    o.dir = r.string(c["dir"], "checkpoint.dir");
    if (o.dir.empty()) r.fail(c["dir"], "checkpoint.dir", "must not be empty");
  }
  if (const YAML::Node s = c["save"]) {
    r.map(s, "checkpoint.save",
          {"every_steps", "every_seconds", "at_steps", "at_end", "on_signals"});
    if (s["every_steps"])
      o.save.every_steps = r.integer(s["every_steps"], "checkpoint.save.every_steps", 0);
    if (s["every_seconds"])
      o.save.every_seconds = r.seconds(s["every_seconds"], "checkpoint.save.every_seconds");
    if (s["at_steps"]) {
      const YAML::Node a = s["at_steps"];
      if (!a.IsSequence()) r.fail(a, "checkpoint.save.at_steps", "must be a list of steps");
      for (size_t i = 0; i < a.size(); ++i)
        o.save.at_steps.push_back(
            r.integer(a[i], "checkpoint.save.at_steps[" + std::to_string(i) + "]", 1));
    }
    if (s["at_end"]) o.save.at_end = r.boolean(s["at_end"], "checkpoint.save.at_end");
    if (s["on_signals"]) {
      o.save.on_signals.clear();
      const YAML::Node a = s["on_signals"];
      for (const auto& name : r.strings(a, "checkpoint.save.on_signals")) {
        try {
          o.save.on_signals.push_back(signal_from_name(name));
        } catch (const ConfigError& e) {
          r.fail(a, "checkpoint.save.on_signals", e.what());
        }
      }
    }
  }
  if (const YAML::Node a = c["async"]) {
    r.map(a, "checkpoint.async", {"enabled", "max_in_flight"});
    if (a["enabled"]) o.async.enabled = r.boolean(a["enabled"], "checkpoint.async.enabled");
    if (a["max_in_flight"])
      o.async.max_in_flight =
          static_cast<int>(r.integer(a["max_in_flight"], "checkpoint.async.max_in_flight", 1));
  }
  if (const YAML::Node k = c["keep"]) {
    r.map(k, "checkpoint.keep", {"last", "every_steps", "every_seconds", "best"});
    if (k["last"]) o.keep.last = static_cast<int>(r.integer(k["last"], "checkpoint.keep.last", 0));
    if (k["every_steps"])
      o.keep.every_steps = r.integer(k["every_steps"], "checkpoint.keep.every_steps", 0);
    if (k["every_seconds"])
      o.keep.every_seconds = r.seconds(k["every_seconds"], "checkpoint.keep.every_seconds");
    if (const YAML::Node b = k["best"]) {
      r.map(b, "checkpoint.keep.best", {"metric", "mode", "count"});
      if (b["metric"]) o.keep.best.metric = r.string(b["metric"], "checkpoint.keep.best.metric");
      if (b["mode"]) {
        const std::string mode = r.string(b["mode"], "checkpoint.keep.best.mode");
        if (mode != "min" && mode != "max")
          r.fail(b["mode"], "checkpoint.keep.best.mode", "must be min or max, not '" + mode + "'");
        o.keep.best.maximize = mode == "max";
      }
      if (b["count"])
        o.keep.best.count =
            static_cast<int>(r.integer(b["count"], "checkpoint.keep.best.count", 0));
      if (o.keep.best.count > 0 && o.keep.best.metric.empty())
        r.fail(b, "checkpoint.keep.best", "count > 0 needs a metric");
    }
  }
  if (const YAML::Node s = c["resume"]) {
    r.map(s, "checkpoint.resume", {"from", "strict", "exclude", "fallback_to_older"});
    if (s["from"]) {
      o.resume.from = r.string(s["from"], "checkpoint.resume.from");
      if (o.resume.from.empty())
        r.fail(s["from"], "checkpoint.resume.from", "must be latest, none, a step or a path");
    }
    if (s["strict"]) o.resume.strict = r.boolean(s["strict"], "checkpoint.resume.strict");
    if (s["exclude"]) o.resume.exclude = r.strings(s["exclude"], "checkpoint.resume.exclude");
    if (s["fallback_to_older"])
      o.resume.fallback_to_older =
          r.boolean(s["fallback_to_older"], "checkpoint.resume.fallback_to_older");
  }
  if (const YAML::Node s = c["storage"]) {
    r.map(s, "checkpoint.storage", {"threads", "fsync", "verify_checksums"});
    if (s["threads"])
      o.storage.threads =
          static_cast<int>(r.integer(s["threads"], "checkpoint.storage.threads", 1));
    if (s["fsync"]) o.storage.fsync = r.boolean(s["fsync"], "checkpoint.storage.fsync");
    if (s["verify_checksums"])
      o.storage.verify_checksums =
          r.boolean(s["verify_checksums"], "checkpoint.storage.verify_checksums");
  }
  if (c["on_error"]) {
    const std::string v = r.string(c["on_error"], "checkpoint.on_error");
    if (v == "raise")
      o.on_error = OnError::kRaise;
    else if (v == "warn")
      o.on_error = OnError::kWarn;
    else
      r.fail(c["on_error"], "checkpoint.on_error", "must be raise or warn, not '" + v + "'");
  }
  return o;
}

}  // namespace

CheckpointManagerOptions parse_manager_options(const std::string& yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + ":" + std::to_string(e.mark.line + 1) +
                      ": not valid YAML: " + e.msg);
  }
  return parse(root, Reader(source));
}

void apply_environment(CheckpointManagerOptions& o) {
  if (const char* d = std::getenv("DCP_CHECKPOINT_DIR"); d && *d) o.dir = d;
  if (const char* f = std::getenv("DCP_RESUME_FROM"); f && *f) o.resume.from = f;
}

CheckpointManagerOptions load_manager_options(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read checkpoint config '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  CheckpointManagerOptions o = parse_manager_options(ss.str(), path);
  apply_environment(o);
  return o;
}

}  // namespace manager
}  // namespace dcp
