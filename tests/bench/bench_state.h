// The state dict the interop benchmarks save, convert and load, the same
// shape Python's side (py_peers.py) uses: 16 float32 tensors
// "layers.NN.weight" of `mib`/16 MiB each.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>

#include "dcp/value.h"

namespace dcp_bench {

inline dcp::StateDict sixteen_tensors(int64_t mib) {
  const int64_t per = mib * (int64_t{1} << 20) / 16 / 4;
  dcp::StateDict sd;
  for (int i = 0; i < 16; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "layers.%02d.weight", i);
    sd[name] = at::rand({per / 1024, 1024});
  }
  return sd;
}

}  // namespace dcp_bench
