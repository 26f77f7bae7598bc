// What core's device path (src/core/device_*.cc) needs from the CUDA runtime beyond device.h:
// events (to order work across streams and to learn, without waiting, whether an enqueued call
// has finished), the PCI address of a device (to tell whether two ranks share a GPU), and a tiny
// kernel that collects per-rank flags and their OR, so a consensus can be reached on the device.
// Plain C++ like device.h: no CUDA header; streams and events are void*.
#pragma once

#include <cstddef>
#include <string>

#include "util/status.h"

namespace obccl::device {

// RAII CUDA event without timing (cudaEventDisableTiming). Move-only.
class DeviceEvent {
 public:
  DeviceEvent() = default;
  static Result<DeviceEvent> create();
  DeviceEvent(DeviceEvent&& other) noexcept;
  DeviceEvent& operator=(DeviceEvent&& other) noexcept;
  DeviceEvent(const DeviceEvent&) = delete;
  DeviceEvent& operator=(const DeviceEvent&) = delete;
  ~DeviceEvent();

  // cudaEventRecord: the event completes once the stream's work enqueued so far has.
  Status record(void* stream);
  // cudaEventQuery: true when complete (or never recorded); never waits.
  Result<bool> done() const;
  // cudaEventSynchronize: the host waits for the event.
  Status synchronize() const;
  // cudaStreamWaitEvent: later work on `stream` waits for the event, on the device only.
  Status makeStreamWait(void* stream) const;
  void* get() const { return event_; }

 private:
  void reset();
  void* event_ = nullptr;
};

// "0000:3b:00.0": the PCI address of a CUDA device (cudaDeviceGetPCIBusId).
Result<std::string> pciBusId(int device);

// n per-rank flags in device memory, flags[i * strideInts] for rank i (stride 0 means 1).
struct FlagSet {
  const int* flags = nullptr;
  size_t n = 0;
  size_t strideInts = 1;
};
// On the stream: out[i] = (a's flag i != 0) for i < a.n, out[a.n + i] = (b's flag i != 0), and
// out[a.n + b.n] = 1 when any of them is set, else 0. One warp (the counts are rank counts).
Status collectFlags(const FlagSet& a, const FlagSet& b, int* out, void* stream);

}  // namespace obccl::device
