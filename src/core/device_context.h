// DeviceContext: one communicator's state for device buffers (docs/DEVICE_PATH.md). The api
// layer makes one per communicator handle; it touches CUDA only when a device call first needs
// it. It owns the staging and scratch memory, the per-call ordering event, the decision between
// the compressed allreduce's two device paths with the exchange of the direct one, and the ring
// of direct calls whose non-finite verdict the host has not read yet. Built only with CUDA.
//
// Threading: the communicator's thread makes the calls; abort() and asyncError() may come from
// any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/device_exchange.h"
#include "device/device.h"
#include "device/path_support.h"
#include "util/status.h"

namespace obccl::core {

// How a communicator runs compressed allreduces on device buffers.
enum class DevicePath {
  kUndecided,
  kDirect,  // device kernels and a device-resident consensus; bytes over a DeviceExchange
  kStaged,  // device kernels; packed bytes through pinned memory over the host transports
};

enum PinnedSlot { kPinnedA = 0, kPinnedB, kPinnedFrames, kPinnedPacked, kPinnedSlots };
enum DeviceSlot { kDeviceCompressed = 0, kDeviceOptim, kDeviceSlots };

class DeviceContext {
 public:
  DeviceContext() = default;
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  // Brackets every device call on `stream`: begin() makes the stream wait (on the device) for the
  // previous call's work, which may still read this context's memory from another stream; end()
  // records that the call's work is enqueued.
  Status begin(void* stream);
  Status end(void* stream);

  // Pinned host memory and device memory of at least `bytes`, kept between calls. Growing waits
  // for the previous call first, since its copies may still use the old allocation.
  Result<uint8_t*> pinned(PinnedSlot slot, size_t bytes);
  Result<uint8_t*> deviceMemory(DeviceSlot slot, size_t bytes);

  DevicePath path() const { return path_; }
  const std::string& pathReason() const { return pathReason_; }
  DeviceExchange* exchange() const { return exchange_.get(); }
  // Sets the decision (and the direct path's exchange); fails if abort() came first.
  Status setPath(DevicePath path, std::string reason, std::unique_ptr<DeviceExchange> exchange);

  // Direct calls report their verdict without a host sync: the flags (n worker flags, n server
  // flags, their OR; device memory) are copied to a pinned ring slot on the stream, and
  // asyncError() reads the slots whose copy has completed.
  Status recordDirectCall(uint64_t seq, int nranks, const int* deviceFlags, void* stream);
  // Non-blocking: the first unreported skipped call (its message names the call and the ranks;
  // obcclInvalidArgument), the exchange's own asynchronous failure, or ok. A skipped call is
  // reported once.
  Status asyncError();
  // Waits for every recorded direct call and returns asyncError() (tests, destruction).
  Status drain();
  void abort();
  bool aborted() const;

  // Host waits a ring slot needed (the ring was full of calls still running); tests expect 0.
  uint64_t ringWaits() const { return ringWaits_; }

 private:
  static constexpr size_t kRing = 64;
  struct Pending {
    uint64_t seq = 0;
    int nranks = 0;
    device::DeviceEvent event;
    int* flags = nullptr;  // 2 * nranks + 1 ints in ringFlags_
  };
  Status ensureEvents();
  // With mu_ held: reads the recorded calls in order while their copies have completed (with
  // wait: all of them, waiting as needed; limit: at most that many).
  Status harvest(bool wait, uint64_t limit);

  mutable std::mutex mu_;  // exchange_, the ring and the reports; abort() and asyncError()
  bool aborted_ = false;
  DevicePath path_ = DevicePath::kUndecided;
  std::string pathReason_;
  std::unique_ptr<DeviceExchange> exchange_;
  device::DeviceEvent done_;
  bool doneRecorded_ = false;
  std::array<device::PinnedBuffer, kPinnedSlots> pinned_;
  std::array<device::DeviceBuffer, kDeviceSlots> device_;
  std::array<Pending, kRing> ring_;
  device::PinnedBuffer ringFlags_;  // every slot's flags, allocated with the first record
  uint64_t recorded_ = 0;           // direct calls recorded so far (ring index = count % kRing)
  uint64_t harvested_ = 0;          // of those, read by the host
  uint64_t ringWaits_ = 0;
  std::string report_;  // the first unreported skipped call
  uint64_t reportCount_ = 0;
};

}  // namespace obccl::core
