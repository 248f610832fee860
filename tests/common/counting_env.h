// An EnvWrapper that counts the calls it forwards, by method name: what
// tests use to see that a backend or the manager goes through the Env given.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dcp/env.h"

namespace dcp {
namespace testing {

class CountingEnv : public EnvWrapper {
 public:
  using EnvWrapper::EnvWrapper;
  std::map<std::string, int> calls;  // GUARDED_BY(mu)
  std::mutex mu;
  void count(const char* name) {
    std::lock_guard<std::mutex> lock(mu);
    ++calls[name];
  }
  std::unique_ptr<WritableFile> new_writable_file(const std::string& p) override {
    count("new_writable_file");
    return EnvWrapper::new_writable_file(p);
  }
  std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& p) override {
    count("new_random_access_file");
    return EnvWrapper::new_random_access_file(p);
  }
  void rename_file(const std::string& a, const std::string& b) override {
    count("rename_file");
    EnvWrapper::rename_file(a, b);
  }
  std::vector<std::string> list_dir(const std::string& p) override {
    count("list_dir");
    return EnvWrapper::list_dir(p);
  }
  std::unique_ptr<FileLock> lock_file(const std::string& p) override {
    count("lock_file");
    return EnvWrapper::lock_file(p);
  }
  void remove_dir_recursively(const std::string& p) override {
    count("remove_dir_recursively");
    EnvWrapper::remove_dir_recursively(p);
  }
};

}  // namespace testing
}  // namespace dcp
