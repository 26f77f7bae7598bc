// CUDA runtime pieces behind path_support.h (events, PCI addresses).
#include "device/path_support.h"

#include <cuda_runtime.h>

#include <utility>

#include "device/cuda_status.h"
#include "util/log.h"

namespace obccl::device {

Result<DeviceEvent> DeviceEvent::create() {
  DeviceEvent e;
  cudaEvent_t ev = nullptr;
  OBCCL_TRY(cudaStatus(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming),
                       "cudaEventCreateWithFlags"));
  e.event_ = ev;
  return e;
}

DeviceEvent::DeviceEvent(DeviceEvent&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)) {}

DeviceEvent& DeviceEvent::operator=(DeviceEvent&& other) noexcept {
  if (this != &other) {
    reset();
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

DeviceEvent::~DeviceEvent() { reset(); }

void DeviceEvent::reset() {
  if (event_ == nullptr) return;
  Status st = cudaStatus(cudaEventDestroy(static_cast<cudaEvent_t>(event_)), "cudaEventDestroy");
  if (!st.isOk()) OBCCL_WARN(kSubsysDevice, "%s", st.message().c_str());
  event_ = nullptr;
}

Status DeviceEvent::record(void* stream) {
  return cudaStatus(
      cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(stream)),
      "cudaEventRecord");
}

Result<bool> DeviceEvent::done() const {
  cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (err == cudaErrorNotReady) return false;
  OBCCL_TRY(cudaStatus(err, "cudaEventQuery"));
  return true;
}

Status DeviceEvent::synchronize() const {
  return cudaStatus(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), "cudaEventSynchronize");
}

Status DeviceEvent::makeStreamWait(void* stream) const {
  return cudaStatus(
      cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event_), 0),
      "cudaStreamWaitEvent");
}

Result<std::string> pciBusId(int device) {
  char id[32] = {};
  OBCCL_TRY(cudaStatus(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof(id)), device),
                       "cudaDeviceGetPCIBusId(" + std::to_string(device) + ")"));
  return std::string(id);
}

}  // namespace obccl::device
