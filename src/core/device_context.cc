// DeviceContext (device_context.h).
#if OBCCL_HAVE_CUDA

#include "core/device_context.h"

#include <utility>

#include "util/log.h"

namespace obccl::core {
namespace {

std::string rankList(const int* flags, int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    if (flags[i] != 0) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

// The message of a skipped direct call, as the host path words its synchronous failure.
std::string skipMessage(uint64_t seq, int n, const int* flags) {
  std::string input = rankList(flags, n), server = rankList(flags + n, n);
  std::string what = "compressed allreduce #" + std::to_string(seq) + " (device buffers): ";
  if (!input.empty())
    return what + "non-finite input on rank(s) " + input +
           ": sendbuff or workerError holds NaN or Inf (or x + e overflowed); every rank skipped "
           "the call, error buffers and recvbuff left unchanged";
  return what + "non-finite server values on rank(s) " + server +
         ": serverError holds NaN or Inf, or the average overflowed; every rank skipped the call, "
         "error buffers and recvbuff left unchanged";
}

}  // namespace

DeviceContext::~DeviceContext() {
  // Copies of the last call may still read or fill this context's memory.
  if (doneRecorded_) {
    Status st = done_.synchronize();
    if (!st.isOk()) OBCCL_WARN(kSubsysDevice, "device context teardown: %s", st.message().c_str());
  }
  std::lock_guard<std::mutex> lock(mu_);
  exchange_.reset();
}

Status DeviceContext::ensureEvents() {
  if (done_.get() != nullptr) return Status::ok();
  OBCCL_ASSIGN_OR_RETURN(done_, device::DeviceEvent::create());
  return Status::ok();
}

Status DeviceContext::begin(void* stream) {
  OBCCL_TRY(ensureEvents());
  if (!doneRecorded_) return Status::ok();
  return done_.makeStreamWait(stream);
}

Status DeviceContext::end(void* stream) {
  OBCCL_TRY(done_.record(stream));
  doneRecorded_ = true;
  return Status::ok();
}

Result<uint8_t*> DeviceContext::pinned(PinnedSlot slot, size_t bytes) {
  device::PinnedBuffer& buf = pinned_[slot];
  if (buf.data() == nullptr || buf.size() < bytes) {
    if (doneRecorded_) OBCCL_TRY(done_.synchronize());
    buf = device::PinnedBuffer();
    OBCCL_ASSIGN_OR_RETURN(buf, device::PinnedBuffer::allocate(bytes > 0 ? bytes : 64));
  }
  return static_cast<uint8_t*>(buf.data());
}

Result<uint8_t*> DeviceContext::deviceMemory(DeviceSlot slot, size_t bytes) {
  device::DeviceBuffer& buf = device_[slot];
  if (buf.data() == nullptr || buf.size() < bytes) {
    if (doneRecorded_) OBCCL_TRY(done_.synchronize());
    buf = device::DeviceBuffer();
    OBCCL_ASSIGN_OR_RETURN(buf, device::DeviceBuffer::allocate(bytes > 0 ? bytes : 256));
  }
  return static_cast<uint8_t*>(buf.data());
}

Status DeviceContext::setPath(DevicePath path, std::string reason,
                              std::unique_ptr<DeviceExchange> exchange) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return systemError("device path: communicator was aborted");
  path_ = path;
  pathReason_ = std::move(reason);
  exchange_ = std::move(exchange);
  return Status::ok();
}

Status DeviceContext::harvest(bool wait, uint64_t limit) {
  for (uint64_t k = 0; k < limit && harvested_ < recorded_; ++k) {
    Pending& p = ring_[harvested_ % kRing];
    OBCCL_ASSIGN_OR_RETURN(bool done, p.event.done());
    if (!done) {
      if (!wait) return Status::ok();
      OBCCL_TRY(p.event.synchronize());
    }
    if (p.flags[2 * p.nranks] != 0) {
      if (reportCount_ == 0) report_ = skipMessage(p.seq, p.nranks, p.flags);
      ++reportCount_;
    }
    ++harvested_;
  }
  return Status::ok();
}

Status DeviceContext::recordDirectCall(uint64_t seq, int nranks, const int* deviceFlags,
                                       void* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  if (recorded_ - harvested_ == kRing) {
    // The device is kRing calls behind: read the oldest, waiting for it if need be.
    OBCCL_TRY(harvest(false, 1));
    if (recorded_ - harvested_ == kRing) {
      ++ringWaits_;
      OBCCL_TRY(harvest(true, 1));
    }
  }
  const size_t ints = 2 * static_cast<size_t>(nranks) + 1;
  if (ringFlags_.size() < kRing * ints * sizeof(int)) {
    // Once per communicator (its size never changes): pinned allocations may synchronise.
    OBCCL_ASSIGN_OR_RETURN(ringFlags_, device::PinnedBuffer::allocate(kRing * ints * sizeof(int)));
  }
  const size_t index = recorded_ % kRing;
  Pending& p = ring_[index];
  if (p.event.get() == nullptr) {
    OBCCL_ASSIGN_OR_RETURN(p.event, device::DeviceEvent::create());
  }
  p.flags = static_cast<int*>(ringFlags_.data()) + index * ints;
  OBCCL_TRY(device::copyAsync(p.flags, deviceFlags, ints * sizeof(int), stream));
  OBCCL_TRY(p.event.record(stream));
  p.seq = seq;
  p.nranks = nranks;
  ++recorded_;
  return Status::ok();
}

Status DeviceContext::asyncError() {
  std::lock_guard<std::mutex> lock(mu_);
  if (exchange_ != nullptr) OBCCL_TRY(exchange_->asyncError());
  OBCCL_TRY(harvest(false, kRing));
  if (reportCount_ == 0) return Status::ok();
  std::string msg = report_;
  if (reportCount_ > 1)
    msg += " (and " + std::to_string(reportCount_ - 1) + " later skipped call(s))";
  report_.clear();
  reportCount_ = 0;
  return invalidArgument(msg);
}

Status DeviceContext::drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    OBCCL_TRY(harvest(true, kRing));
  }
  return asyncError();
}

void DeviceContext::abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  if (exchange_ != nullptr) exchange_->abort();
}

bool DeviceContext::aborted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return aborted_;
}

}  // namespace obccl::core

#endif  // OBCCL_HAVE_CUDA
