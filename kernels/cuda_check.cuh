// Error checking and device selection for the CUDA launchers: every failure becomes a C++ exception
// that pybind11 turns into a Python RuntimeError.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.h"

namespace ganfast {

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("ganfast CUDA error in ") + what + ": " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
}
#define GANFAST_CUDA_CHECK(call) ::ganfast::cuda_check((call), #call)
// After a kernel launch: launch-configuration errors surface here; asynchronous faults at the next sync.
#define GANFAST_CUDA_CHECK_LAUNCH(name) ::ganfast::cuda_check(cudaGetLastError(), name)

// Makes `device` current for the scope (torch's current device may differ from the tensor's).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    GANFAST_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) GANFAST_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// The grid of a kernel with `blocks` blocks per plane on axis x and `planes` planes grid-strided over axis z
// (capped at the device's axis-z limit). Fails with too_many() when the blocks exceed axis x's 2**31 - 1.
template <typename Message>
dim3 plane_grid(int device, int64_t blocks, int64_t planes, Message&& too_many) {
  if (blocks > 0x7fffffff) fail(too_many());
  int max_grid_z = 0;
  GANFAST_CUDA_CHECK(cudaDeviceGetAttribute(&max_grid_z, cudaDevAttrMaxGridDimZ, device));
  return dim3(unsigned(blocks), 1, unsigned(std::min<int64_t>(planes, max_grid_z)));
}

}  // namespace ganfast
