// detect_environment(): the launcher's variables, validated.
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>
#include <string>

#include "dcp/dist/process_group.h"
#include "dcp/error.h"

namespace dcp {
namespace dist {

namespace {

struct Style {
  const char* source;
  const char* rank;
  const char* size;
  const char* local_rank;
};

// In the order they are tried.
constexpr Style kStyles[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
};

std::optional<std::string> get_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

std::string describe(const char* name, const std::string& value) {
  return std::string(name) + "='" + value + "'";
}

// A decimal integer in [0, INT_MAX]: the whole value, no sign, no blanks.
// `source` names the launcher for the message; empty for MASTER_PORT.
int parse_count(const char* name, const std::string& value, const std::string& source) {
  const auto bad = [&](const std::string& why) {
    return ConfigError("environment variable " + describe(name, value) +
                       (source.empty() ? "" : " (" + source + " launch)") + " " + why);
  };
  if (value.empty()) throw bad("is empty; expected a non-negative integer");
  if (value[0] == '-') throw bad("is negative; expected a non-negative integer");
  for (char c : value)
    if (c < '0' || c > '9') throw bad("is not a decimal integer");
  errno = 0;
  const long long v = std::strtoll(value.c_str(), nullptr, 10);
  if (errno == ERANGE || v > INT_MAX) throw bad("is too large");
  return static_cast<int>(v);
}

}  // namespace

DistEnvironment detect_environment() {
  DistEnvironment env;
  for (const Style& style : kStyles) {
    const auto rank = get_env(style.rank);
    const auto size = get_env(style.size);
    if (!rank && !size) continue;
    if (!rank || !size) {
      const char* set = rank ? style.rank : style.size;
      const char* unset = rank ? style.size : style.rank;
      throw ConfigError("environment variable " + describe(set, rank ? *rank : *size) +
                        " is set (" + style.source + " launch) but " + unset + " is not");
    }
    env.source = style.source;
    env.rank = parse_count(style.rank, *rank, style.source);
    env.world_size = parse_count(style.size, *size, style.source);
    const auto local = get_env(style.local_rank);
    env.local_rank = local ? parse_count(style.local_rank, *local, style.source) : env.rank;
    if (env.world_size < 1)
      throw ConfigError("environment variable " + describe(style.size, *size) + " (" +
                        style.source + " launch) must be at least 1");
    if (env.rank >= env.world_size)
      throw ConfigError("environment variable " + describe(style.rank, *rank) + " (" +
                        style.source + " launch) is not below " + describe(style.size, *size));
    break;
  }

  if (const auto addr = get_env("MASTER_ADDR")) {
    if (addr->empty())
      throw ConfigError("environment variable MASTER_ADDR='' is empty; expected a host or address");
    env.master_addr = *addr;
  }
  if (const auto port = get_env("MASTER_PORT")) {
    env.master_port = parse_count("MASTER_PORT", *port, "");
    if (env.master_port < 1 || env.master_port > 65535)
      throw ConfigError("environment variable " + describe("MASTER_PORT", *port) +
                        " is not a TCP port (1..65535)");
  }
  return env;
}

}  // namespace dist
}  // namespace dcp
