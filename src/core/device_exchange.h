// The byte exchanges of the compressed allreduce's device-resident ("direct") engine
// (device_compressed.cc): an all-to-all and an all-gather of device buffers, only enqueued on a
// stream. NCCL provides them when every rank has its own GPU; a one-rank communicator copies on
// the device; OBCCL_DEVICE_PATH=host-exchange runs them over obccl's own transports through
// pinned memory (host synchronisations, for testing the engine where NCCL cannot run); tests can
// install their own. Built only with CUDA (OBCCL_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "device/nccl_path.h"
#include "util/status.h"

namespace obccl::core {

class Comm;

class DeviceExchange {
 public:
  virtual ~DeviceExchange() = default;
  // send + i*bytesPerPeer goes to rank i; recv + i*bytesPerPeer comes from rank i.
  virtual Status alltoall(const void* send, void* recv, size_t bytesPerPeer, void* stream) = 0;
  // recv + i*bytesPerRank receives rank i's send.
  virtual Status allgather(const void* send, void* recv, size_t bytesPerRank, void* stream) = 0;
  // A failure the exchange learnt of asynchronously (a dead peer), or ok.
  virtual Status asyncError() { return Status::ok(); }
  // From any thread: interrupts and disables the exchange.
  virtual void abort() {}
  // Whether every call returns without waiting for the device (the zero-synchronisation claim).
  virtual bool hostSyncFree() const = 0;
  virtual const char* name() const = 0;
};

// The exchanges of the one-rank communicator: device-to-device copies.
std::unique_ptr<DeviceExchange> makeSelfExchange();
// Over NCCL (device/nccl_path.h); collective: every rank calls it with the same id.
Result<std::unique_ptr<DeviceExchange>> makeNcclExchange(int nranks, int rank,
                                                         const device::NcclUniqueIdBytes& id,
                                                         int timeoutMs);
// Over comm's transports, staged through pinned host memory; only inside one of comm's ops.
std::unique_ptr<DeviceExchange> makeHostExchange(Comm& comm);

// Tests: when set, every communicator's first device compressed allreduce uses the exchange the
// factory makes (on every rank alike) instead of NCCL. An empty function removes it.
using DeviceExchangeFactory = std::function<Result<std::unique_ptr<DeviceExchange>>(Comm&)>;
void setDeviceExchangeFactoryForTesting(DeviceExchangeFactory factory);
DeviceExchangeFactory deviceExchangeFactoryForTesting();

}  // namespace obccl::core
