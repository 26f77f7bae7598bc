// The DeviceExchange implementations (device_exchange.h).
#if OBCCL_HAVE_CUDA

#include "core/device_exchange.h"

#include <mutex>
#include <utility>

#include "core/comm.h"
#include "device/device.h"

namespace obccl::core {
namespace {

class SelfExchange : public DeviceExchange {
 public:
  Status alltoall(const void* send, void* recv, size_t bytes, void* stream) override {
    return device::copyAsync(recv, send, bytes, stream);
  }
  Status allgather(const void* send, void* recv, size_t bytes, void* stream) override {
    return device::copyAsync(recv, send, bytes, stream);
  }
  bool hostSyncFree() const override { return true; }
  const char* name() const override { return "self"; }
};

class NcclExchange : public DeviceExchange {
 public:
  explicit NcclExchange(std::unique_ptr<device::NcclComm> comm) : comm_(std::move(comm)) {}
  Status alltoall(const void* send, void* recv, size_t bytes, void* stream) override {
    return comm_->alltoall(send, recv, bytes, stream);
  }
  Status allgather(const void* send, void* recv, size_t bytes, void* stream) override {
    return comm_->allgather(send, recv, bytes, stream);
  }
  Status asyncError() override { return comm_->asyncError(); }
  void abort() override { (void)comm_->abort(); }
  bool hostSyncFree() const override { return true; }
  const char* name() const override { return "nccl"; }

 private:
  std::unique_ptr<device::NcclComm> comm_;
};

// D2H into pinned memory, wait, exchange over the transports, H2D: each call synchronises once.
class HostExchange : public DeviceExchange {
 public:
  explicit HostExchange(Comm& comm) : comm_(comm) {}
  Status alltoall(const void* send, void* recv, size_t bytes, void* stream) override {
    const size_t total = bytes * static_cast<size_t>(comm_.nranks());
    OBCCL_TRY(stage(send, total, stream));
    OBCCL_TRY(comm_.allToAll(in_.data(), out_.data(), bytes, obcclUint8));
    return device::copyAsync(recv, out_.data(), total, stream);
  }
  Status allgather(const void* send, void* recv, size_t bytes, void* stream) override {
    OBCCL_TRY(stage(send, bytes, stream));
    OBCCL_TRY(comm_.allGather(in_.data(), out_.data(), bytes, obcclUint8));
    return device::copyAsync(recv, out_.data(), bytes * static_cast<size_t>(comm_.nranks()),
                             stream);
  }
  bool hostSyncFree() const override { return false; }
  const char* name() const override { return "host-exchange"; }

 private:
  // Copies send into in_ and waits for it. The wait also retires the previous call's copy out of
  // out_ (earlier on the stream), which the exchange is about to overwrite.
  Status stage(const void* send, size_t bytes, void* stream) {
    const size_t outBytes = bytes * static_cast<size_t>(comm_.nranks());
    if (in_.size() < bytes || out_.size() < outBytes) {
      OBCCL_TRY(device::streamSynchronize(stream));  // nothing may still read the old buffers
      OBCCL_TRY(grow(&in_, bytes));
      OBCCL_TRY(grow(&out_, outBytes));
    }
    OBCCL_TRY(device::copyAsync(in_.data(), send, bytes, stream));
    return device::streamSynchronize(stream);
  }
  static Status grow(device::PinnedBuffer* buf, size_t bytes) {
    if (buf->size() >= bytes && buf->data() != nullptr) return Status::ok();
    OBCCL_ASSIGN_OR_RETURN(*buf, device::PinnedBuffer::allocate(bytes > 0 ? bytes : 1));
    return Status::ok();
  }

  Comm& comm_;
  device::PinnedBuffer in_, out_;
};

std::mutex& factoryMutex() {
  static std::mutex m;
  return m;
}

DeviceExchangeFactory& factorySlot() {
  static DeviceExchangeFactory f;
  return f;
}

}  // namespace

std::unique_ptr<DeviceExchange> makeSelfExchange() { return std::make_unique<SelfExchange>(); }

Result<std::unique_ptr<DeviceExchange>> makeNcclExchange(int nranks, int rank,
                                                         const device::NcclUniqueIdBytes& id,
                                                         int timeoutMs) {
  OBCCL_ASSIGN_OR_RETURN(std::unique_ptr<device::NcclComm> comm,
                         device::NcclComm::create(nranks, rank, id, timeoutMs));
  return std::unique_ptr<DeviceExchange>(new NcclExchange(std::move(comm)));
}

std::unique_ptr<DeviceExchange> makeHostExchange(Comm& comm) {
  return std::make_unique<HostExchange>(comm);
}

void setDeviceExchangeFactoryForTesting(DeviceExchangeFactory factory) {
  std::lock_guard<std::mutex> lock(factoryMutex());
  factorySlot() = std::move(factory);
}

DeviceExchangeFactory deviceExchangeFactoryForTesting() {
  std::lock_guard<std::mutex> lock(factoryMutex());
  return factorySlot();
}

}  // namespace obccl::core

#endif  // OBCCL_HAVE_CUDA
