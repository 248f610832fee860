// The checkpoint directory: file-system helpers, the record, step_N
// directories and moving them aside (directory.h).
#include "directory.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "dcp/error.h"
#include "dcp/filesystem.h"

namespace dcp {
namespace manager {
namespace detail {

double wall_clock() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void fsync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno("cannot open directory", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw_errno("cannot fsync directory", path, err);
}

void write_durably(const std::string& path, const std::string& data, bool sync) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("cannot create", path, errno);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int err = errno;
      ::close(fd);
      throw_errno("cannot write", path, err);
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (sync && ::fdatasync(fd) != 0) {
    int err = errno;
    ::close(fd);
    throw_errno("cannot fdatasync", path, err);
  }
  ::close(fd);
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw_errno("cannot rename to '" + to + "' from", from, errno);
}

std::vector<std::string> entries(const std::string& dir, bool missing_ok) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    const int err = errno;
    if (missing_ok && err == ENOENT) return out;
    throw StorageError("cannot list checkpoint directory '" + dir + "': " + errno_text(err), err);
  }
  for (;;) {
    errno = 0;
    auto* e = ::readdir(d);
    if (!e) {
      const int err = errno;
      ::closedir(d);
      if (err != 0)
        throw StorageError("cannot list checkpoint directory '" + dir + "': " + errno_text(err),
                           err);
      return out;
    }
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
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
std::string record_problem(const std::string& path, CheckpointInfo& info, bool& missing) {
  std::ifstream in(path + "/" + kRecordName, std::ios::binary);
  missing = !in;
  if (missing) return std::string("no ") + kRecordName;
  std::stringstream text;
  text << in.rdbuf();
  info = CheckpointInfo{};
  info.path = path;
  const std::string problem = parse_record(text.str(), info);
  return problem.empty() ? "" : std::string("bad ") + kRecordName + ": " + problem;
}

}  // namespace

std::string commit_problem(const std::string& path, int64_t step, CheckpointInfo& info) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "not a directory";
  if (!is_committed_checkpoint(path)) return "no .metadata";
  bool missing = false;
  const std::string problem = record_problem(path, info, missing);
  if (!problem.empty()) return problem;
  if (info.step != step)
    return std::string("bad ") + kRecordName + ": it is of step " + std::to_string(info.step);
  return "";
}

std::vector<StepDir> scan_step_dirs(const std::string& dir, bool missing_ok) {
  std::vector<StepDir> out;
  for (auto& name : entries(dir, missing_ok)) {
    StepDir s;
    if (!parse_step_dir(name, s.step)) continue;
    s.problem = commit_problem(dir + "/" + name, s.step, s.info);
    s.name = std::move(name);
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::string move_aside(const std::string& dir, const std::string& name, const char* kind,
                       bool sync) {
  for (int k = 0;; ++k) {
    const std::string to = dir + "/." + kind + "." + name + "." + std::to_string(k);
    struct stat st;
    if (::lstat(to.c_str(), &st) == 0) continue;
    rename_or_throw(dir + "/" + name, to);
    if (sync) fsync_dir(dir);
    return to;
  }
}

}  // namespace detail

std::vector<CheckpointInfo> list_committed(const std::string& dir) {
  std::vector<CheckpointInfo> out;
  for (auto& s : detail::scan_step_dirs(dir, /*missing_ok=*/true))
    if (s.problem.empty()) out.push_back(std::move(s.info));
  return out;
}

CheckpointInfo read_checkpoint_record(const std::string& path) {
  CheckpointInfo info;
  bool missing = false;
  const std::string problem = detail::record_problem(path, info, missing);
  if (missing) throw NotFoundError(problem + " in '" + path + "'");
  if (!problem.empty()) throw CorruptionError("'" + path + "': " + problem);
  int64_t named = 0;
  if (detail::parse_step_dir(detail::base_name(path), named) && named != info.step)
    throw CorruptionError("'" + path + "': " + detail::kRecordName + " is of step " +
                          std::to_string(info.step) + ", the directory's name says step " +
                          std::to_string(named));
  return info;
}

}  // namespace manager
}  // namespace dcp
