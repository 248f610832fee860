// Helpers shared by the tests: temporary directories, generated state dicts,
// and a fault-injecting storage writer.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <string>

#include "dcp/dcp.h"

namespace dcp {
namespace testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A tensor of `dtype` and `sizes` filled with values that depend on `seed`.
at::Tensor make_tensor(at::ScalarType dtype, at::IntArrayRef sizes, int64_t seed);

// Every dtype dcp++ supports.
std::vector<at::ScalarType> all_dtypes();

// A destination like `t` (same dtype/shape) but with different contents.
at::Tensor scrambled_like(const at::Tensor& t);

// Bytes of a file, and overwriting them.
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);
// The data files (*.distcp) of a checkpoint directory, sorted.
std::vector<std::string> data_files(const std::string& dir);

// A writer whose planner wrapper throws after `fail_after` items were resolved:
// a save that fails midway through writing data.
class FailingWriter : public StorageWriterWrapper {
 public:
  FailingWriter(std::shared_ptr<StorageWriter> target, int fail_after)
      : StorageWriterWrapper(std::move(target)), fail_after_(fail_after) {}
  std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                   SavePlanner& planner) override;

 private:
  int fail_after_;
};

// A simple Stateful: a weight tensor, a step counter and a name.
class Counter : public Stateful {
 public:
  at::Tensor weight = at::zeros({4, 3});
  int64_t step = 0;
  std::string name = "counter";
  StateDict state_dict() override;
  void load_state_dict(const StateDict& sd) override;
};

}  // namespace testing
}  // namespace dcp
