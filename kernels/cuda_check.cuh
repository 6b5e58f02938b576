// Error checking and device selection for the CUDA launchers: every failure becomes a C++ exception
// that pybind11 turns into a Python RuntimeError.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

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

}  // namespace ganfast
