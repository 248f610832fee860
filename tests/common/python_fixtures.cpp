#include "common/python_fixtures.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#ifndef DCP_SOURCE_DIR
#error "DCP_SOURCE_DIR (the dcp++ source tree) must be defined"
#endif

extern char** environ;

namespace dcp {
namespace testing {
namespace {

const char* const kScript = DCP_SOURCE_DIR "/tests/interop/py/make_fixtures.py";

std::string python() {
  const char* p = std::getenv("DCP_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("python fixtures: cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// An unlinked temporary file (its descriptor).
int temp_file() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dcp_fixture_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const int fd = ::mkstemp(buf.data());
  if (fd < 0)
    throw std::runtime_error(std::string("python fixtures: mkstemp: ") + std::strerror(errno));
  ::unlink(buf.data());
  return fd;
}

std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  ::lseek(fd, 0, SEEK_SET);
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return out;
    }
  }
}

struct Output {
  int status = 0;
  std::string out, err;
};

// Runs python `script` args... with stdout and stderr captured.
Output run_any(const std::string& script, const std::vector<std::string>& args) {
  std::vector<std::string> argv_s{python(), script};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  const int out_fd = temp_file();
  const int err_fd = temp_file();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  Output o;
  if (rc != 0) {
    ::close(out_fd);
    ::close(err_fd);
    throw std::runtime_error("python fixtures: cannot run " + argv_s[0] + ": " + std::strerror(rc) +
                             " (install python3-torch: scripts/install-deps.sh)");
  }
  while (::waitpid(pid, &o.status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("python fixtures: waitpid failed");
  }
  o.out = read_all(out_fd);
  o.err = read_all(err_fd);
  ::close(out_fd);
  ::close(err_fd);
  return o;
}

std::string describe_failure(const std::string& what, const Output& o) {
  std::string how = WIFEXITED(o.status) ? "exited with " + std::to_string(WEXITSTATUS(o.status))
                    : WIFSIGNALED(o.status)
                        ? "killed by signal " + std::to_string(WTERMSIG(o.status))
                        : "failed";
  return what + " " + how + "; stderr:\n" + o.err;
}

bool succeeded(const Output& o) { return WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0; }

// Runs python make_fixtures.py args...
Output run_script(const std::vector<std::string>& args) { return run_any(kScript, args); }

std::string last_line(const std::string& text) {
  size_t end = text.find_last_not_of("\r\n");
  if (end == std::string::npos) return "";
  const size_t begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1,
                     end - (begin == std::string::npos ? 0 : begin + 1) + 1);
}

std::vector<std::string> strings(const nlohmann::json& j, const char* field) {
  std::vector<std::string> out;
  if (j.contains(field))
    for (const auto& s : j.at(field)) out.push_back(s.get<std::string>());
  return out;
}

std::string unhex(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::runtime_error("python fixtures: odd-length hex string");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

at::Tensor read_tensor(const std::string& out_dir, const nlohmann::json& e) {
  const at::ScalarType dtype = fixture_dtype(e.at("dtype").get<std::string>());
  const std::vector<int64_t> shape = e.at("shape").get<std::vector<int64_t>>();
  const std::string file = out_dir + "/" + e.at("file").get<std::string>();
  const std::string data = slurp(file);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
  if (data.size() != nbytes || e.at("nbytes").get<size_t>() != nbytes)
    throw std::runtime_error("python fixtures: " + file + " has " + std::to_string(data.size()) +
                             " bytes; a " + e.at("dtype").get<std::string>() +
                             " tensor of that shape has " + std::to_string(nbytes));
  if (nbytes) std::memcpy(t.data_ptr(), data.data(), nbytes);
  return t;
}

const std::vector<std::string> kKinds = {"tensor", "int",   "float", "str",  "bool",
                                         "none",   "bytes", "list",  "dict", "unsupported"};

ExpectedLeaf read_leaf(const std::string& out_dir, const nlohmann::json& e) {
  ExpectedLeaf leaf;
  leaf.key = e.at("key").get<std::string>();
  leaf.path = e.at("path");
  leaf.kind = e.at("kind").get<std::string>();
  leaf.py_type = e.at("py_type").get<std::string>();
  leaf.entry = e;
  if (std::find(kKinds.begin(), kKinds.end(), leaf.kind) == kKinds.end())
    throw std::runtime_error("python fixtures: leaf '" + leaf.key + "' has unknown kind '" +
                             leaf.kind + "'");
  if (leaf.kind == "tensor") {
    leaf.tensor = read_tensor(out_dir, e);
  } else if (leaf.kind == "unsupported") {
    leaf.why = e.at("why").get<std::string>();
  } else {
    leaf.value = e.at("value");
    if (leaf.kind == "bytes") leaf.bytes = unhex(leaf.value.get<std::string>());
  }
  return leaf;
}

}  // namespace

std::string make_python_fixture(const std::string& kind, const std::string& out_dir) {
  const Output o = run_script({kind, out_dir});
  if (!succeeded(o)) throw std::runtime_error(describe_failure("make_fixtures.py " + kind, o));
  const std::string path = last_line(o.out);
  if (path.empty() || path[0] != '/')
    throw std::runtime_error("make_fixtures.py " + kind + " printed no checkpoint path; stdout:\n" +
                             o.out);
  return path;
}

std::string shared_python_fixture(const std::string& kind) {
  // The cache key: the scripts' contents, so an edited script makes new fixtures.
  std::string scripts;
  for (const char* f : {"make_fixtures.py", "dcp2_standins.py", "dcp113_compat.py"}) {
    std::ifstream in(std::string(DCP_SOURCE_DIR "/tests/interop/py/") + f, std::ios::binary);
    scripts += std::string(std::istreambuf_iterator<char>(in), {});
  }
  char key[32];
  std::snprintf(key, sizeof key, "%016zx", std::hash<std::string>{}(scripts));
  const char* env = std::getenv("DCP_FIXTURE_CACHE");
  const std::string root = env && *env ? env : DCP_FIXTURE_CACHE_DIR;
  const std::string dir = root + "/" + kind + "-" + key;
  if (std::ifstream(dir + "/expected/manifest.json").good()) return dir;
  ::mkdir(root.c_str(), 0755);
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  std::system(("rm -rf '" + tmp + "'").c_str());
  make_python_fixture(kind, tmp);
  // The first process to finish wins; the others drop their copies.
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    std::system(("rm -rf '" + tmp + "'").c_str());
    if (err != ENOTEMPTY && err != EEXIST)
      throw std::runtime_error("cannot rename " + tmp + " to " + dir + ": " + std::strerror(err));
  }
  return dir;
}

std::vector<std::string> python_fixture_kinds() {
  const Output o = run_script({"--list"});
  if (!succeeded(o)) throw std::runtime_error(describe_failure("make_fixtures.py --list", o));
  std::vector<std::string> kinds;
  std::istringstream in(o.out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) kinds.push_back(line);
  return kinds;
}

at::ScalarType fixture_dtype(const std::string& name) {
  static const std::vector<std::pair<std::string, at::ScalarType>> kDtypes = {
      {"float32", at::kFloat},
      {"float64", at::kDouble},
      {"bfloat16", at::kBFloat16},
      {"float16", at::kHalf},
      {"int64", at::kLong},
      {"int32", at::kInt},
      {"int16", at::kShort},
      {"int8", at::kChar},
      {"uint8", at::kByte},
      {"bool", at::kBool},
      {"complex64", at::kComplexFloat},
      {"complex128", at::kComplexDouble}};
  for (const auto& [n, t] : kDtypes)
    if (n == name) return t;
  throw std::runtime_error("python fixtures: unknown dtype '" + name + "'");
}

const ExpectedLeaf* ExpectedCheckpoint::find(const std::string& key) const {
  for (const auto& l : leaves)
    if (l.key == key) return &l;
  return nullptr;
}

const ExpectedLeaf& ExpectedCheckpoint::leaf(const std::string& key) const {
  const ExpectedLeaf* l = find(key);
  if (!l)
    throw std::runtime_error("python fixtures: checkpoint '" + name + "' has no leaf '" + key +
                             "'");
  return *l;
}

const ExpectedCheckpoint& FixtureManifest::checkpoint(const std::string& name) const {
  for (const auto& c : checkpoints)
    if (c.name == name) return c;
  throw std::runtime_error("python fixtures: manifest of '" + kind + "' has no checkpoint '" +
                           name + "'");
}

FixtureManifest load_fixture_manifest(const std::string& out_dir) {
  const std::string file = out_dir + "/expected/manifest.json";
  FixtureManifest m;
  m.out_dir = out_dir;
  try {
    m.json = nlohmann::json::parse(slurp(file));
    if (m.json.at("manifest_version").get<int>() != 1)
      throw std::runtime_error("unknown manifest_version");
    m.kind = m.json.at("kind").get<std::string>();
    for (const auto& c : m.json.at("checkpoints")) {
      ExpectedCheckpoint ck;
      ck.name = c.at("name").get<std::string>();
      ck.path = out_dir + "/" + c.at("path").get<std::string>();
      ck.format = c.at("format").get<std::string>();
      ck.flavour = c.value("flavour", "");
      ck.layout = c.value("layout", "");
      ck.world_size = c.value("world_size", 1);
      ck.must_refuse = c.at("must_refuse").get<bool>();
      ck.metadata_files = strings(c, "metadata_files");
      ck.param_names = strings(c, "param_names");
      ck.notes = strings(c, "notes");
      for (const auto& e : c.at("leaves")) ck.leaves.push_back(read_leaf(out_dir, e));
      m.checkpoints.push_back(std::move(ck));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("python fixtures: " + file + ": " + e.what());
  }
  if (m.checkpoints.empty())
    throw std::runtime_error("python fixtures: " + file + " lists no checkpoint");
  return m;
}

PythonRun run_python_script(const std::string& script, const std::vector<std::string>& args) {
  const std::string path = DCP_SOURCE_DIR "/tests/interop/py/" + script;
  const Output o = run_any(path, args);
  PythonRun r;
  r.exit_code = WIFEXITED(o.status) ? WEXITSTATUS(o.status) : -1;
  r.out = o.out;
  r.err = o.err;
  if (r.exit_code < 0) r.err += "\n" + describe_failure(script, o);
  return r;
}

}  // namespace testing
}  // namespace dcp
