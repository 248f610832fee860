// The checkpoint directory: file operations through the Env, the record, step_N
// directories and moving them aside (directory.h).
#include "directory.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <set>
#include <sstream>

#include "dcp/error.h"
#include "dcp/filesystem.h"

namespace dcp {
namespace manager {
namespace internal {

double wall_clock() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Env* env_of(Env* env, const std::string& dir) { return env ? env : env_for(dir); }

bool exists(Env* env, const std::string& path) {
  const std::string p = env_path(path);
  return env->dir_exists(p) || env->file_exists(p);
}

void fsync_dir(Env* env, const std::string& path) { env->sync_dir(env_path(path)); }

void write_durably(Env* env, const std::string& path, const std::string& data, bool sync) {
  env->write_file(env_path(path), data, sync);
}

void rename_or_throw(Env* env, const std::string& from, const std::string& to) {
  env->rename_file(env_path(from), env_path(to));
}

std::vector<std::string> entries(Env* env, const std::string& dir, bool missing_ok) {
  auto fail = [&](int err) -> std::vector<std::string> {
    throw StorageError("cannot list checkpoint directory '" + dir + "': " + errno_text(err), err);
  };
  try {
    return env->list_dir(env_path(dir));
  } catch (const NotFoundError&) {
    if (missing_ok) return {};
    return fail(ENOENT);
  } catch (const StorageError& e) {
    if (e.error_number() == 0) throw;
    return fail(e.error_number());
  }
}

bool parse_step_dir(const std::string& name, int64_t& step) {
  if (name.rfind("step_", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return false;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  step = std::stoll(name.substr(5));
  return true;
}

std::string record_text(int64_t step, int world_size,
                        const std::map<std::string, double>& metrics) {
  std::ostringstream s;
  s.precision(17);
  s << "format_version=" << kRecordVersion << "\nstep=" << step << "\nwall_time=" << wall_clock()
    << "\nworld_size=" << world_size << "\n";
  for (const auto& [k, v] : metrics) s << "metric." << k << "=" << v << "\n";
  return s.str();
}

namespace {

// A whole-string number, or false.
bool to_int(const std::string& v, int64_t& out) {
  if (v.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  out = x;
  return true;
}
bool to_double(const std::string& v, double& out) {
  if (v.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v.c_str(), &end);
  if (errno != 0 || *end != '\0') return false;
  out = x;
  return true;
}

// Parses a record; returns why it is not one (empty when it is).
std::string parse_record(const std::string& text, CheckpointInfo& info) {
  if (text.empty()) return "the record is empty";
  std::istringstream in(text);
  std::string line;
  std::set<std::string> seen;
  int64_t version = 0, step = 0, world = 0;
  for (int n = 1; std::getline(in, line); ++n) {
    const auto eq = line.find('=');
    const std::string where = "line " + std::to_string(n);
    if (eq == std::string::npos || eq == 0) return where + " is not key=value";
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (!seen.insert(k).second) return where + ": '" + k + "' appears twice";
    bool ok;
    if (k == "format_version")
      ok = to_int(v, version);
    else if (k == "step")
      ok = to_int(v, step);
    else if (k == "world_size")
      ok = to_int(v, world);
    else if (k == "wall_time")
      ok = to_double(v, info.wall_time);
    else if (k.rfind("metric.", 0) == 0 && k.size() > 7)
      ok = to_double(v, info.metrics[k.substr(7)]);
    else
      return where + ": unknown key '" + k + "'";
    if (!ok) return where + ": '" + k + "' has a bad value '" + v + "'";
  }
  for (const char* k : {"format_version", "step", "wall_time", "world_size"})
    if (!seen.count(k)) return std::string("no '") + k + "'";
  if (version < 1 || version > kRecordVersion)
    return "format_version " + std::to_string(version) + " is not known (this build reads 1 to " +
           std::to_string(kRecordVersion) + ")";
  if (world < 1) return "world_size " + std::to_string(world) + " is not a world size";
  info.step = step;
  info.world_size = static_cast<int>(world);
  return "";
}

std::string base_name(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Reads and parses the record in the checkpoint `path`: why it is not a
// valid record (empty when it is). `missing` tells a record that is not there.
std::string record_problem(Env* env, const std::string& path, CheckpointInfo& info, bool& missing) {
  const std::string record = env_path(path + "/" + kRecordName);
  missing = !env->file_exists(record);
  if (missing) return std::string("no ") + kRecordName;
  std::string text;
  try {
    text = env->read_file(record);
  } catch (const NotFoundError&) {
    missing = true;
    return std::string("no ") + kRecordName;
  }
  info = CheckpointInfo{};
  info.path = path;
  const std::string problem = parse_record(text, info);
  return problem.empty() ? "" : std::string("bad ") + kRecordName + ": " + problem;
}

}  // namespace

std::string commit_problem(Env* env, const std::string& path, int64_t step, CheckpointInfo& info) {
  if (!env->dir_exists(env_path(path))) return "not a directory";
  if (!is_committed_checkpoint(path, env)) return "no .metadata";
  bool missing = false;
  const std::string problem = record_problem(env, path, info, missing);
  if (!problem.empty()) return problem;
  if (info.step != step)
    return std::string("bad ") + kRecordName + ": it is of step " + std::to_string(info.step);
  return "";
}

std::vector<StepDir> scan_step_dirs(Env* env, const std::string& dir, bool missing_ok) {
  std::vector<StepDir> out;
  for (auto& name : entries(env, dir, missing_ok)) {
    StepDir s;
    if (!parse_step_dir(name, s.step)) continue;
    s.problem = commit_problem(env, dir + "/" + name, s.step, s.info);
    s.name = std::move(name);
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::string move_aside(Env* env, const std::string& dir, const std::string& name, const char* kind,
                       bool sync) {
  for (int k = 0;; ++k) {
    const std::string to = dir + "/." + kind + "." + name + "." + std::to_string(k);
    if (exists(env, to)) continue;
    rename_or_throw(env, dir + "/" + name, to);
    if (sync) fsync_dir(env, dir);
    return to;
  }
}

}  // namespace internal

std::vector<CheckpointInfo> list_committed(const std::string& dir, Env* env) {
  std::vector<CheckpointInfo> out;
  for (auto& s : internal::scan_step_dirs(internal::env_of(env, dir), dir, /*missing_ok=*/true))
    if (s.problem.empty()) out.push_back(std::move(s.info));
  return out;
}

CheckpointInfo read_checkpoint_record(const std::string& path, Env* env) {
  CheckpointInfo info;
  bool missing = false;
  const std::string problem =
      internal::record_problem(internal::env_of(env, path), path, info, missing);
  if (missing) throw NotFoundError(problem + " in '" + path + "'");
  if (!problem.empty()) throw CorruptionError("'" + path + "': " + problem);
  int64_t named = 0;
  if (internal::parse_step_dir(internal::base_name(path), named) && named != info.step)
    throw CorruptionError("'" + path + "': " + internal::kRecordName + " is of step " +
                          std::to_string(info.step) + ", the directory's name says step " +
                          std::to_string(named));
  return info;
}

}  // namespace manager
}  // namespace dcp
