// The 1-bit Adam helper (onebit_adam.h, DESIGN.md section 6) on device buffers: the same state
// machine over device-resident m, v, mask and error buffers, with the device kernels
// (device/device.h) and the device collectives (device_path.h). The api layer makes one from the
// host optimizer's state on the first step with device buffers and hands the state back (toHost)
// before anything that only the host optimizer does. Results are bitwise those of the host
// optimizer given the same compressed-allreduce scales (docs/DEVICE_PATH.md).
//
// Host waits: a step reads one flag back (the skip decision must be known on the host, which
// counts steps), plus v at the auto-freeze checks and at the freeze. Built only with CUDA.
#pragma once

#include <cstddef>
#include <memory>

#include "core/onebit_adam.h"

namespace obccl::core {
class Comm;
class DeviceContext;
}  // namespace obccl::core

namespace obccl::optim {

class DeviceOnebitAdam {
 public:
  virtual ~DeviceOnebitAdam() = default;
  // Takes over host's whole state (through its state blob). comm and ctx must outlive it.
  static Result<std::unique_ptr<DeviceOnebitAdam>> fromHost(const OnebitAdam& host,
                                                            core::Comm& comm,
                                                            core::DeviceContext& ctx);
  // Hands the state back (host->loadState of this state's blob), after the last step finished.
  virtual Status toHost(OnebitAdam* host) const = 0;

  // OnebitAdam::step on device buffers, ordered on `stream`.
  virtual Status step(float* params, const float* localGrads, float lr, void* stream) = 0;
  virtual Status resetErrorFeedback() = 0;

  virtual long long stepCount() const = 0;
  virtual obcclOptimStage_t stage() const = 0;
  virtual long long skippedSteps() const = 0;
};

}  // namespace obccl::optim
