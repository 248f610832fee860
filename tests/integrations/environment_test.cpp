// detect_environment(): each launcher's variables, their order, and bad values.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "dcp/dist/process_group.h"
#include "dcp/error.h"

namespace {

using dcp::dist::detect_environment;
using dcp::dist::DistEnvironment;

const char* const kVars[] = {
    "RANK",         "WORLD_SIZE",           "LOCAL_RANK",           "MASTER_ADDR",
    "MASTER_PORT",  "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_PROCID", "SLURM_NTASKS",         "SLURM_LOCALID",
};

// Clears every variable detect_environment() reads, restoring them afterwards
// (the test may itself run under a launcher).
class DetectEnvironment : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kVars) {
      if (const char* old = std::getenv(v)) saved_[v] = old;
      ::unsetenv(v);
    }
  }
  void TearDown() override {
    for (const char* v : kVars) ::unsetenv(v);
    for (const auto& kv : saved_) ::setenv(kv.first.c_str(), kv.second.c_str(), 1);
  }
  static void set(const std::map<std::string, std::string>& vars) {
    for (const auto& kv : vars) ::setenv(kv.first.c_str(), kv.second.c_str(), 1);
  }
  // The ConfigError's message, or nullopt when detect_environment() did not throw one.
  static std::optional<std::string> config_error() {
    try {
      detect_environment();
    } catch (const dcp::ConfigError& e) {
      EXPECT_EQ(e.code(), dcp::ErrorCode::kConfig);
      return std::string(e.what());
    }
    return std::nullopt;
  }

 private:
  std::map<std::string, std::string> saved_;
};

TEST_F(DetectEnvironment, NothingSetIsOneProcess) {
  const DistEnvironment env = detect_environment();
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.source, "none");
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, 29500);
}

TEST_F(DetectEnvironment, Torchrun) {
  set({{"RANK", "5"},
       {"WORLD_SIZE", "8"},
       {"LOCAL_RANK", "1"},
       {"MASTER_ADDR", "node17.cluster"},
       {"MASTER_PORT", "23456"}});
  const DistEnvironment env = detect_environment();
  EXPECT_EQ(env.source, "torchrun");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, "node17.cluster");
  EXPECT_EQ(env.master_port, 23456);
}

TEST_F(DetectEnvironment, LocalRankDefaultsToRank) {
  set({{"RANK", "3"}, {"WORLD_SIZE", "4"}});
  const DistEnvironment env = detect_environment();
  EXPECT_EQ(env.local_rank, 3);
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, 29500);
}

TEST_F(DetectEnvironment, Mpirun) {
  set({{"OMPI_COMM_WORLD_RANK", "2"},
       {"OMPI_COMM_WORLD_SIZE", "3"},
       {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
       {"MASTER_PORT", "31000"}});
  const DistEnvironment env = detect_environment();
  EXPECT_EQ(env.source, "mpirun");
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.world_size, 3);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.master_addr, "127.0.0.1");
  EXPECT_EQ(env.master_port, 31000);
}

TEST_F(DetectEnvironment, Srun) {
  set({{"SLURM_PROCID", "7"},
       {"SLURM_NTASKS", "16"},
       {"SLURM_LOCALID", "3"},
       {"MASTER_ADDR", "10.0.0.1"}});
  const DistEnvironment env = detect_environment();
  EXPECT_EQ(env.source, "srun");
  EXPECT_EQ(env.rank, 7);
  EXPECT_EQ(env.world_size, 16);
  EXPECT_EQ(env.local_rank, 3);
  EXPECT_EQ(env.master_addr, "10.0.0.1");
}

TEST_F(DetectEnvironment, TorchrunWinsOverMpirunWinsOverSrun) {
  set({{"OMPI_COMM_WORLD_RANK", "1"},
       {"OMPI_COMM_WORLD_SIZE", "2"},
       {"SLURM_PROCID", "3"},
       {"SLURM_NTASKS", "4"}});
  EXPECT_EQ(detect_environment().source, "mpirun");
  EXPECT_EQ(detect_environment().rank, 1);
  set({{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  EXPECT_EQ(detect_environment().source, "torchrun");
  EXPECT_EQ(detect_environment().world_size, 1);
}

TEST_F(DetectEnvironment, NonNumericValueNamesVariableAndValue) {
  set({{"RANK", "abc"}, {"WORLD_SIZE", "4"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("RANK='abc'"), std::string::npos) << *msg;

  set({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1x"}});
  msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("LOCAL_RANK='1x'"), std::string::npos) << *msg;
}

TEST_F(DetectEnvironment, BlanksAndHugeValuesAreRejected) {
  set({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", " 4"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("OMPI_COMM_WORLD_SIZE=' 4'"), std::string::npos) << *msg;

  set({{"OMPI_COMM_WORLD_SIZE", "99999999999"}});
  msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("OMPI_COMM_WORLD_SIZE='99999999999'"), std::string::npos) << *msg;
}

TEST_F(DetectEnvironment, NegativeValue) {
  set({{"SLURM_PROCID", "-1"}, {"SLURM_NTASKS", "2"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("SLURM_PROCID='-1'"), std::string::npos) << *msg;
  EXPECT_NE(msg->find("negative"), std::string::npos) << *msg;
}

TEST_F(DetectEnvironment, RankNotBelowWorldSize) {
  set({{"RANK", "4"}, {"WORLD_SIZE", "4"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("RANK='4'"), std::string::npos) << *msg;
  EXPECT_NE(msg->find("WORLD_SIZE='4'"), std::string::npos) << *msg;
}

TEST_F(DetectEnvironment, ZeroWorldSize) {
  set({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "0"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("SLURM_NTASKS='0'"), std::string::npos) << *msg;
}

TEST_F(DetectEnvironment, RankWithoutWorldSize) {
  set({{"RANK", "1"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("RANK='1'"), std::string::npos) << *msg;
  EXPECT_NE(msg->find("WORLD_SIZE is not"), std::string::npos) << *msg;

  ::unsetenv("RANK");
  set({{"OMPI_COMM_WORLD_SIZE", "2"}});
  msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("OMPI_COMM_WORLD_RANK is not"), std::string::npos) << *msg;
}

TEST_F(DetectEnvironment, BadMasterPortOrAddr) {
  set({{"MASTER_PORT", "70000"}});
  auto msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("MASTER_PORT='70000'"), std::string::npos) << *msg;

  set({{"MASTER_PORT", "http"}});
  msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("MASTER_PORT='http'"), std::string::npos) << *msg;

  set({{"MASTER_PORT", "0"}});
  msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("MASTER_PORT='0'"), std::string::npos) << *msg;

  set({{"MASTER_PORT", "29501"}, {"MASTER_ADDR", ""}});
  msg = config_error();
  ASSERT_TRUE(msg);
  EXPECT_NE(msg->find("MASTER_ADDR=''"), std::string::npos) << *msg;
}

}  // namespace
