// DeviceOnebitAdam (device_optim.h): OnebitAdam's state machine (onebit_adam.cc) with the state
// in device memory. Decisions that the host optimizer makes from v (auto-freeze, the automatic
// mask, the root floor) use a host copy of v and the very same host functions, so both make the
// same decisions at the same steps.
#if OBCCL_HAVE_CUDA

#include "core/device_optim.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/comm.h"
#include "core/device_context.h"
#include "core/device_path.h"
#include "core/onebit_adam_kernels.h"
#include "core/onebit_adam_state.h"
#include "device/device.h"
#include "device/path_support.h"
#include "util/log.h"

namespace obccl::optim {
namespace {

Result<device::DeviceBuffer> deviceFloats(size_t n) {
  return device::DeviceBuffer::allocate(n * sizeof(float));
}

// Host -> device, waiting for it (setup paths only).
Status uploadFloats(device::DeviceBuffer& dst, const std::vector<float>& src) {
  OBCCL_ASSIGN_OR_RETURN(dst, deviceFloats(src.size()));
  OBCCL_TRY(device::copyAsync(dst.data(), src.data(), src.size() * sizeof(float), nullptr));
  return device::streamSynchronize(nullptr);
}

std::vector<float> sectionOf(const unsigned char* bytes, size_t n) {
  std::vector<float> v(n);
  copyFloats(v.data(), bytes, n);
  return v;
}

Status download(std::vector<float>* dst, const device::DeviceBuffer& src, size_t n) {
  dst->resize(n);
  OBCCL_TRY(device::copyAsync(dst->data(), src.data(), n * sizeof(float), nullptr));
  return device::streamSynchronize(nullptr);
}

class DeviceOnebitAdamImpl : public DeviceOnebitAdam {
 public:
  DeviceOnebitAdamImpl(core::Comm& comm, core::DeviceContext& ctx, size_t count, const Options& o)
      : comm_(comm), ctx_(ctx), count_(count), opt_(o) {}
  Status upload(const void* blob, size_t bytes);
  Status toHost(OnebitAdam* host) const override;
  Status step(float* params, const float* localGrads, float lr, void* stream) override;
  Status resetErrorFeedback() override;
  long long stepCount() const override { return step_; }
  obcclOptimStage_t stage() const override { return stage_; }
  long long skippedSteps() const override { return skipped_; }

 private:
  Status warmupStep(float* params, const float* grads, const device::AdamParams& p, void* st);
  Status compressedStep(float* params, const float* grads, const device::AdamParams& p, void* st);
  // Reads a device flag (waits for the stream).
  Result<bool> readFlag(const int* flag, void* stream);
  Status skip(const float* localGrads, const std::string& where, void* stream);
  Status hostVariance();  // hostV_ = v
  Result<bool> autoFreezeDue();
  Status freeze();
  void updateRootFloor();
  Status ensureErrorBuffers(void* stream);

  core::Comm& comm_;
  core::DeviceContext& ctx_;
  size_t count_;
  Options opt_;
  size_t workerCount_ = 0, serverCount_ = 0;
  long long step_ = 0, skipped_ = 0;
  obcclOptimStage_t stage_ = obcclStageWarmup;
  bool userMask_ = false, autoMask_ = false, havePrevSum_ = false;
  double prevSum_ = 0.0;
  float rootFloorValue_ = 0.0f;
  device::DeviceBuffer m_, v_, scratch_, mask_, workerError_, serverError_, flag_;
  device::PinnedBuffer flagHost_;
  device::DeviceEvent done_;  // recorded after each step: later work on any stream waits for it
  std::vector<float> hostV_, hostMask_;
  bool hostVValid_ = false;
};

}  // namespace

Result<std::unique_ptr<DeviceOnebitAdam>> DeviceOnebitAdam::fromHost(const OnebitAdam& host,
                                                                     core::Comm& comm,
                                                                     core::DeviceContext& ctx) {
  std::vector<unsigned char> blob(host.stateSize());
  OBCCL_TRY(host.saveState(blob.data(), blob.size()));
  auto d = std::make_unique<DeviceOnebitAdamImpl>(comm, ctx, host.count(), host.options());
  OBCCL_TRY(d->upload(blob.data(), blob.size()));
  return std::unique_ptr<DeviceOnebitAdam>(std::move(d));
}

Status DeviceOnebitAdamImpl::upload(const void* blob, size_t bytes) {
  StateHeader h;
  ParsedSections s;
  OBCCL_TRY(parseStateBlob(blob, bytes, &h, &s));
  step_ = h.step;
  skipped_ = h.skipped;
  stage_ = static_cast<obcclOptimStage_t>(h.stage);
  userMask_ = (h.flags & kStateUserMask) != 0;
  autoMask_ = (h.flags & kStateAutoMask) != 0;
  havePrevSum_ = (h.flags & kStateHavePrevSum) != 0;
  prevSum_ = havePrevSum_ ? h.prevVarianceSum : 0.0;
  workerCount_ = h.workerErrorCount;
  serverCount_ = h.serverErrorCount;
  OBCCL_TRY(uploadFloats(m_, sectionOf(s.m, count_)));
  hostV_ = sectionOf(s.v, count_);
  hostVValid_ = true;
  OBCCL_TRY(uploadFloats(v_, hostV_));
  OBCCL_ASSIGN_OR_RETURN(scratch_, deviceFloats(count_));
  OBCCL_ASSIGN_OR_RETURN(flag_, device::DeviceBuffer::allocate(sizeof(int)));
  OBCCL_ASSIGN_OR_RETURN(flagHost_, device::PinnedBuffer::allocate(sizeof(int)));
  OBCCL_ASSIGN_OR_RETURN(done_, device::DeviceEvent::create());
  hostMask_.clear();
  if (userMask_ || autoMask_) {
    hostMask_ = sectionOf(s.mask, count_);
    OBCCL_TRY(uploadFloats(mask_, hostMask_));
  }
  if (stage_ == obcclStageCompressed && comm_.nranks() > 1) {
    OBCCL_TRY(uploadFloats(workerError_, sectionOf(s.workerError, workerCount_)));
    OBCCL_TRY(uploadFloats(serverError_, sectionOf(s.serverError, serverCount_)));
  }
  updateRootFloor();
  return done_.record(nullptr);
}

Status DeviceOnebitAdamImpl::toHost(OnebitAdam* host) const {
  OBCCL_TRY(done_.synchronize());
  StateHeader h;
  h.count = count_;
  h.rank = comm_.rank();
  h.worldSize = comm_.nranks();
  h.step = step_;
  h.stage = stage_;
  h.flags = (userMask_ ? kStateUserMask : 0u) | (autoMask_ ? kStateAutoMask : 0u) |
            (havePrevSum_ ? kStateHavePrevSum : 0u);
  h.skipped = skipped_;
  h.workerErrorCount = workerCount_;
  h.serverErrorCount = serverCount_;
  h.prevVarianceSum = havePrevSum_ ? prevSum_ : 0.0;
  std::vector<float> m, v, worker, server;
  OBCCL_TRY(download(&m, m_, count_));
  OBCCL_TRY(download(&v, v_, count_));
  StateSections s;
  s.m = m.data();
  s.v = v.data();
  s.mask = hostMask_.empty() ? nullptr : hostMask_.data();
  if (workerError_.data() != nullptr) {
    OBCCL_TRY(download(&worker, workerError_, workerCount_));
    OBCCL_TRY(download(&server, serverError_, serverCount_));
    s.workerError = worker.data();
    s.serverError = server.data();
  }
  std::vector<unsigned char> blob(stateBlobBytes(h));
  writeStateBlob(h, s, blob.data());
  return host->loadState(blob.data(), blob.size());
}

Status DeviceOnebitAdamImpl::step(float* params, const float* localGrads, float lr, void* stream) {
  if (std::isnan(lr) || std::isinf(lr)) {
    char text[64];
    std::snprintf(text, sizeof(text), "%g", static_cast<double>(lr));
    return invalidArgument(std::string("lr = ") + text +
                           " is not finite (pass a negative lr to use the configured one)");
  }
  device::AdamParams p{lr < 0 ? opt_.lr : lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weightDecay};
  OBCCL_TRY(done_.makeStreamWait(stream));  // the previous step may have run on another stream
  if (stage_ == obcclStageWarmup && opt_.freezeStep != OBCCL_FREEZE_AUTO &&
      step_ >= opt_.freezeStep)
    OBCCL_TRY(freeze());
  Status st = stage_ == obcclStageWarmup ? warmupStep(params, localGrads, p, stream)
                                         : compressedStep(params, localGrads, p, stream);
  Status rec = done_.record(stream);
  OBCCL_TRY(st);
  return rec;
}

Status DeviceOnebitAdamImpl::warmupStep(float* params, const float* grads,
                                        const device::AdamParams& p, void* st) {
  const float* g = grads;
  if (comm_.nranks() > 1) {
    OBCCL_TRY(core::deviceAllReduce(comm_, ctx_, grads, scratch_.data(), count_, obcclFloat32,
                                    obcclAvg, st));
    g = scratch_.as<float>();
  }
  OBCCL_TRY(device::checkNonFinite(g, obcclFloat32, count_, flag_.as<int>(), st));
  OBCCL_ASSIGN_OR_RETURN(bool bad, readFlag(flag_.as<int>(), st));
  if (bad) return skip(grads, "the averaged gradient is not finite", st);
  OBCCL_TRY(device::warmupUpdate(params, m_.as<float>(), v_.as<float>(), g, count_, p, st));
  hostVValid_ = false;
  ++step_;
  bool due = false;
  if (opt_.freezeStep == OBCCL_FREEZE_AUTO) {
    OBCCL_ASSIGN_OR_RETURN(due, autoFreezeDue());
  } else {
    due = step_ >= opt_.freezeStep;
  }
  if (due) OBCCL_TRY(freeze());
  return Status::ok();
}

Status DeviceOnebitAdamImpl::compressedStep(float* params, const float* grads,
                                            const device::AdamParams& p, void* st) {
  // The blend goes to scratch so that m stays untouched until the step is certain to happen.
  OBCCL_TRY(
      device::momentumBlend(scratch_.as<float>(), m_.as<float>(), grads, count_, p.beta1, st));
  if (comm_.nranks() == 1) {
    OBCCL_TRY(device::checkNonFinite(scratch_.data(), obcclFloat32, count_, flag_.as<int>(), st));
    OBCCL_ASSIGN_OR_RETURN(bool bad, readFlag(flag_.as<int>(), st));
    if (bad) return skip(grads, "the momentum is not finite", st);
  } else {
    OBCCL_TRY(ensureErrorBuffers(st));
    const int* skipFlag = nullptr;
    core::DeviceCompressedOptions o;
    o.skipFlag = &skipFlag;
    o.reportSkip = false;  // decided here, not through obcclCommGetAsyncError
    Status s = core::deviceCompressedAllReduce(comm_, ctx_, scratch_.data(), scratch_.data(),
                                               count_, obcclFloat32, workerError_.as<float>(),
                                               serverError_.as<float>(), st, o);
    // As on the host: every rank fails alike, error buffers unchanged, on non-finite input.
    if (s.code() == obcclInvalidArgument) return skip(grads, s.message(), st);
    OBCCL_TRY(s);
    if (skipFlag != nullptr) {
      OBCCL_ASSIGN_OR_RETURN(bool bad, readFlag(skipFlag, st));
      if (bad) return skip(grads, "some rank's momentum is not finite (device consensus)", st);
    }
  }
  std::swap(m_, scratch_);
  OBCCL_TRY(device::frozenUpdate(params, m_.as<float>(), v_.as<float>(),
                                 hostMask_.empty() ? nullptr : mask_.as<float>(), count_, p,
                                 rootFloorValue_, st));
  ++step_;
  return Status::ok();
}

Result<bool> DeviceOnebitAdamImpl::readFlag(const int* flag, void* stream) {
  OBCCL_TRY(device::copyAsync(flagHost_.data(), flag, sizeof(int), stream));
  OBCCL_TRY(device::streamSynchronize(stream));
  return *static_cast<const int*>(flagHost_.data()) != 0;
}

// As OnebitAdam::skip: the first ten skips are logged, then at powers of two.
Status DeviceOnebitAdamImpl::skip(const float* localGrads, const std::string& where, void* stream) {
  ++skipped_;
  if (skipped_ > 10 && (skipped_ & (skipped_ - 1)) != 0) return Status::ok();
  std::vector<float> g(count_);
  OBCCL_TRY(device::copyAsync(g.data(), localGrads, count_ * sizeof(float), stream));
  OBCCL_TRY(device::streamSynchronize(stream));
  size_t bad = firstNonFinite(g.data(), count_);
  if (bad < count_)
    OBCCL_WARN(kSubsysOptim,
               "1-bit Adam step %lld skipped on every rank: rank %d's gradient[%zu] = %g is not "
               "finite (%lld skipped so far; logged up to 10, then at powers of 2)",
               step_ + 1, comm_.rank(), bad, static_cast<double>(g[bad]), skipped_);
  else
    OBCCL_WARN(kSubsysOptim,
               "1-bit Adam step %lld skipped on every rank: rank %d's gradient is finite, "
               "another rank's is not (%s; %lld skipped so far)",
               step_ + 1, comm_.rank(), where.c_str(), skipped_);
  return Status::ok();
}

Status DeviceOnebitAdamImpl::hostVariance() {
  if (hostVValid_) return Status::ok();
  OBCCL_TRY(done_.synchronize());
  OBCCL_TRY(download(&hostV_, v_, count_));
  hostVValid_ = true;
  return Status::ok();
}

Result<bool> DeviceOnebitAdamImpl::autoFreezeDue() {
  const AutoFreezeOptions& a = opt_.autoFreeze;
  if (step_ >= a.maxSteps) return true;
  if (step_ % a.window != 0) return false;
  OBCCL_TRY(hostVariance());
  double sum = sumDouble(hostV_.data(), count_);
  bool due = havePrevSum_ && step_ >= a.minSteps && sum > 0 &&
             std::fabs(sum - prevSum_) <= a.tolerance * sum;
  OBCCL_DEBUG(kSubsysOptim, "1-bit Adam auto-freeze: step %lld sum(v) %.6g previous %.6g%s", step_,
              sum, prevSum_, due ? " -> freeze" : "");
  prevSum_ = sum;
  havePrevSum_ = true;
  return due;
}

Status DeviceOnebitAdamImpl::freeze() {
  OBCCL_TRY(hostVariance());
  stage_ = obcclStageCompressed;
  size_t zeros = 0;
  if (!userMask_) {
    for (size_t i = 0; i < count_; ++i) zeros += hostV_[i] == 0.0f;
    if (zeros > 0) {
      hostMask_.resize(count_);
      for (size_t i = 0; i < count_; ++i) hostMask_[i] = hostV_[i] == 0.0f ? 0.0f : 1.0f;
      autoMask_ = true;
      OBCCL_TRY(uploadFloats(mask_, hostMask_));
    }
  }
  updateRootFloor();
  OBCCL_INFO(kSubsysOptim,
             "1-bit Adam rank %d (device buffers): variance frozen after %lld updates; %zu "
             "coordinates masked automatically, root floor %g",
             comm_.rank(), step_, zeros, static_cast<double>(rootFloorValue_));
  return Status::ok();
}

void DeviceOnebitAdamImpl::updateRootFloor() {
  rootFloorValue_ = 0.0f;
  if (opt_.rootFloor <= 0 || stage_ != obcclStageCompressed) return;
  size_t included = 0;
  double sum = maskedSumDouble(hostV_.data(), hostMask_.empty() ? nullptr : hostMask_.data(),
                               count_, &included);
  if (included > 0)
    rootFloorValue_ = static_cast<float>(opt_.rootFloor * std::sqrt(sum / included));
}

Status DeviceOnebitAdamImpl::ensureErrorBuffers(void* stream) {
  if (workerError_.data() != nullptr || workerCount_ == 0) return Status::ok();
  OBCCL_ASSIGN_OR_RETURN(workerError_, deviceFloats(workerCount_));
  OBCCL_ASSIGN_OR_RETURN(serverError_, deviceFloats(serverCount_));
  OBCCL_TRY(device::memsetAsync(workerError_.data(), 0, workerCount_ * sizeof(float), stream));
  return device::memsetAsync(serverError_.data(), 0, serverCount_ * sizeof(float), stream);
}

Status DeviceOnebitAdamImpl::resetErrorFeedback() {
  OBCCL_TRY(done_.synchronize());
  if (workerError_.data() == nullptr) return Status::ok();
  OBCCL_TRY(device::memsetAsync(workerError_.data(), 0, workerCount_ * sizeof(float), nullptr));
  OBCCL_TRY(device::memsetAsync(serverError_.data(), 0, serverCount_ * sizeof(float), nullptr));
  OBCCL_TRY(device::streamSynchronize(nullptr));
  return done_.record(nullptr);
}

}  // namespace obccl::optim

#endif  // OBCCL_HAVE_CUDA
