#include <ATen/ATen.h>
#include <dcp/dcp.h>
#include <dcp/torch/process_group.h>
int main(int argc, char** argv) {
  dcp::StateDict sd{{"w", at::ones({3})}, {"step", 1}};
  dcp::save(sd, argv[1]);
  auto back = dcp::load_all(argv[1]);
  return at::equal(back["w"].tensor(), at::ones({3})) ? 0 : 1;
}
