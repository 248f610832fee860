// The save statistics file of a run directory (dcp/manager/stats.h).
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dcp/error.h"
#include "dcp/logging.h"
#include "dcp/manager/stats.h"
#include "stats_file.h"

namespace dcp {
namespace manager {
namespace internal {

double wall_time_at(std::chrono::steady_clock::time_point t) {
  const double ago = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
             .count() -
         ago;
}

std::string stats_line(const SaveStatistics& st) {
  nlohmann::ordered_json j;  // the fields in this order
  j["step"] = st.step;
  j["async"] = st.async;
  j["start_time"] = st.start_time;
  j["blocking_seconds"] = st.blocking_seconds;
  j["durable_seconds"] = st.durable_seconds;
  j["bytes"] = st.bytes;
  j["gbps"] = st.gbps;
  return j.dump() + "\n";
}

namespace {

Env* base_env(Env* env) {
  while (auto* w = dynamic_cast<EnvWrapper*>(env)) env = w->target();
  return env;
}

}  // namespace

void append_save_statistics(Env* env, const std::string& dir, const SaveStatistics& st) noexcept {
  const std::string path = dir + "/" + kStatsFileName;
  try {
    const std::string line = stats_line(st);
    Env* base = base_env(env ? env : env_for(dir));
    if (base == posix_env()) {
      const int fd =
          ::open(env_path(path).c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) throw StorageError("cannot open '" + path + "': " + std::strerror(errno), errno);
      ssize_t n;
      do n = ::write(fd, line.data(), line.size());
      while (n < 0 && errno == EINTR);
      const int err = errno;
      ::close(fd);
      if (n < 0) throw StorageError("cannot append to '" + path + "': " + std::strerror(err), err);
      if (static_cast<size_t>(n) != line.size())
        throw StorageError("short append to '" + path + "'", 0);
    }
  } catch (const std::exception& e) {
    logger().warn("cannot append the statistics of step {} to '{}': {}", st.step, path, e.what());
  }
}

}  // namespace internal

std::vector<SaveStatistics> read_save_statistics(const std::string& dir, Env* env,
                                                 size_t* skipped) {
  if (skipped) *skipped = 0;
  env = env ? env : env_for(dir);
  const std::string path = env_path(dir + "/" + kStatsFileName);
  std::vector<SaveStatistics> out;
  if (!env->file_exists(path)) return out;
  std::istringstream in(env->read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      SaveStatistics st;
      st.step = j.at("step").get<int64_t>();
      st.async = j.at("async").get<bool>();
      st.start_time = j.at("start_time").get<double>();
      st.blocking_seconds = j.at("blocking_seconds").get<double>();
      st.durable_seconds = j.at("durable_seconds").get<double>();
      st.bytes = j.at("bytes").get<uint64_t>();
      st.gbps = j.at("gbps").get<double>();
      out.push_back(st);
    } catch (const std::exception&) {
      if (skipped) ++*skipped;
    }
  }
  return out;
}

}  // namespace manager
}  // namespace dcp
