// dcp::convert to a torch file with the optimizer in Python's layout,
// against Python itself (Debian's /usr/bin/python3 with PyTorch 1.13): an
// MLP (torch_test_net.h) trained 10 steps with Adam in LibTorch is saved
// with dcp::save (the optimizer in dcp++'s own layout), converted to one
// torch file (ConvertOptimizerLayout::kPyTorch), and continued one step in
// Python (py_convert_continue.py: the equivalent nn.Module's
// load_state_dict, torch.optim.Adam's load_state_dict) and one in LibTorch:
// the parameters agree.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/test_util.h"
#include "dcp/convert.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/adapters.h"
#include "torch_test_net.h"

namespace {

using namespace dcp_torch_test;
using dcp::testing::TempDir;

constexpr const char kPython[] = "/usr/bin/python3";

bool have_python_torch() {
  return std::system((std::string(kPython) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
}

void write_raw(const std::string& path, const at::Tensor& t) {
  const at::Tensor c = t.detach().contiguous();
  std::ofstream(path, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

std::string shape_field(const at::Tensor& t) {
  std::string s;
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "," : "") + std::to_string(t.size(d));
  return s.empty() ? "-" : s;
}

TEST(TorchConvertPython, AdamContinuesInPythonAsInLibTorch) {
  if (!have_python_torch()) GTEST_SKIP() << kPython << " has no torch";
  TempDir dir;
  constexpr int kSteps = 10;
  auto net = make_net(7);
  torch::optim::Adam opt(two_groups(*net), torch::optim::AdamOptions(1e-2).weight_decay(1e-3));
  for (int i = 0; i < kSteps; ++i) train_step(*net, opt, i, /*use_aux=*/false);

  dcp::StateDict sd{{"model", std::make_shared<dcp::libtorch::ModuleState>(*net)},
                    {"optim", std::make_shared<dcp::libtorch::OptimizerState>(opt, *net)}};
  dcp::save(sd, dir.sub("ckpt"));
  dcp::ConvertOptions co;
  co.to = dcp::ConvertFormat::kTorchSave;
  co.optimizer_layout = dcp::ConvertOptimizerLayout::kPyTorch;
  co.sync = false;
  const dcp::ConvertResult r = dcp::convert(dir.sub("ckpt"), dir.sub("run.pt"), co);
  EXPECT_EQ(r.files, std::vector<std::string>{"run.pt"});

  // The batch of step kSteps, for Python.
  const std::string in = dir.sub("in");
  std::filesystem::create_directories(in);
  auto [x, y] = batch(kSteps);
  write_raw(in + "/x.bin", x);
  write_raw(in + "/y.bin", y);
  dcp::testing::write_file(
      in + "/manifest.txt",
      "x.0 float32 " + shape_field(x) + " x.bin\ny.0 float32 " + shape_field(y) + " y.bin\n");
  const std::string out = dir.sub("out");
  const std::string cmd = std::string(kPython) + " " DCP_PY_CONVERT_CONTINUE " " +
                          dir.sub("run.pt") + " " + in + " " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // LibTorch's step.
  train_step(*net, opt, kSteps, /*use_aux=*/true);

  std::istringstream manifest(dcp::testing::read_file(out + "/manifest.txt"));
  size_t n = 0;
  double worst = 0;
  for (std::string line; std::getline(manifest, line);) {
    std::istringstream ls(line);
    std::string what, key, dtype, shape, file;
    ls >> what >> key >> dtype >> shape >> file;
    ASSERT_EQ(what, "tensor") << line;
    const std::string name = key.substr(std::string("param/").size());
    const at::Tensor mine = net->named_parameters()[name].detach();
    at::Tensor theirs = torch::empty_like(mine);
    const std::string data = dcp::testing::read_file(out + "/" + file);
    ASSERT_EQ(data.size(), theirs.nbytes()) << name;
    std::memcpy(theirs.data_ptr(), data.data(), data.size());
    worst = std::max(worst, (mine - theirs).abs().max().item<double>());
    // Python and LibTorch run the same ATen kernels here (Debian's builds of
    // one PyTorch 1.13): the step is the same to the bit.
    EXPECT_TRUE(torch::equal(mine, theirs))
        << name << ": largest difference " << (mine - theirs).abs().max().item<double>();
    ++n;
  }
  EXPECT_EQ(n, net->named_parameters().size());
  std::printf("largest parameter difference after the Python step: %g\n", worst);
}

}  // namespace
