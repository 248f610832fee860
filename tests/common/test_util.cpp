#include "common/test_util.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace dcp {
namespace testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dcp_test_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::string cmd = "rm -rf '" + path_ + "'";
  if (std::system(cmd.c_str()) != 0) {
  }
}

at::Tensor make_tensor(at::ScalarType dtype, at::IntArrayRef sizes, int64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) + 1);
  at::Tensor base = at::randn(sizes, gen, at::TensorOptions().dtype(at::kDouble)) * 50;
  if (dtype == at::kBool) return base > 0;
  if (at::isComplexType(dtype)) {
    at::Tensor im = at::randn(sizes, gen, at::TensorOptions().dtype(at::kDouble));
    return at::complex(base, im).to(dtype);
  }
  if (dtype == at::kByte) return base.abs().to(dtype);
  return base.to(dtype);
}

std::vector<at::ScalarType> all_dtypes() {
  return {at::kFloat,       at::kDouble,       at::kHalf,         at::kBFloat16, at::kChar,
          at::kShort,       at::kInt,          at::kLong,         at::kByte,     at::kBool,
          at::kComplexHalf, at::kComplexFloat, at::kComplexDouble};
}

at::Tensor scrambled_like(const at::Tensor& t) {
  at::Tensor out = at::empty(t.sizes(), t.options());
  if (out.numel() == 0) return out;
  // Different bytes everywhere: flip every bit of the original.
  at::Tensor src = t.contiguous();
  auto* s = static_cast<const uint8_t*>(src.data_ptr());
  auto* d = static_cast<uint8_t*>(out.data_ptr());
  for (size_t i = 0; i < out.nbytes(); ++i) d[i] = static_cast<uint8_t>(~s[i] ^ 0x5a);
  if (t.scalar_type() == at::kBool) out = t.logical_not();
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::vector<std::string> data_files(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 7 && n.compare(n.size() - 7, 7, ".distcp") == 0) out.push_back(dir + "/" + n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
// Forwards to the real planner, but throws once `limit` items were resolved.
class FailingPlanner : public SavePlanner {
 public:
  FailingPlanner(SavePlanner& inner, int limit) : inner_(inner), limit_(limit) {}
  void set_up_planner(const StateDict& sd, const std::optional<StorageMeta>& m, bool c) override {
    inner_.set_up_planner(sd, m, c);
  }
  SavePlan create_local_plan() override { return inner_.create_local_plan(); }
  std::pair<std::vector<SavePlan>, Metadata> create_global_plan(std::vector<SavePlan> p) override {
    return inner_.create_global_plan(std::move(p));
  }
  SavePlan finish_plan(SavePlan p) override { return inner_.finish_plan(std::move(p)); }
  WriteData resolve_data(const WriteItem& item) override {
    if (count_.fetch_add(1) >= limit_)
      throw StorageError("injected failure while writing " + to_string(item.index), 5);
    return inner_.resolve_data(item);
  }

 private:
  SavePlanner& inner_;
  int limit_;
  std::atomic<int> count_{0};
};
}  // namespace

std::future<std::vector<WriteResult>> FailingWriter::write_data(const SavePlan& plan,
                                                                SavePlanner& planner) {
  FailingPlanner failing(planner, fail_after_);
  // The target writes synchronously, so `failing` outlives its use.
  auto fut = target().write_data(plan, failing);
  fut.wait();
  return fut;
}

StateDict Counter::state_dict() { return {{"weight", weight}, {"step", step}, {"name", name}}; }

void Counter::load_state_dict(const StateDict& sd) {
  weight = sd.at("weight").tensor();
  step = sd.at("step").to_int();
  name = sd.at("name").to_string();
}

}  // namespace testing
}  // namespace dcp
