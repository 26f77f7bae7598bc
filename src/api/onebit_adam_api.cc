// extern "C" entry points of the 1-bit Adam optimizer helper (include/obccl/onebit_adam.h).
// Failures are recorded on the optimizer's communicator and on the calling thread.
#include <cstdint>
#include <memory>
#include <utility>

#include "api/guard.h"
#include "core/memory.h"
#include "core/onebit_adam.h"
#include "obccl/onebit_adam.h"
#if OBCCL_HAVE_CUDA
#include "core/device_optim.h"
#include "core/device_path.h"
#endif

namespace obccl::api {
namespace {

constexpr uint64_t kOptimMagic = 0x0bada111feedf00dULL;

}  // namespace
}  // namespace obccl::api

struct obcclOnebitAdam {
  uint64_t magic = obccl::api::kOptimMagic;  // cleared on destroy, to catch stale handles
  obcclComm_t comm = nullptr;                // must outlive the optimizer
  std::unique_ptr<obccl::optim::OnebitAdam> impl;
#if OBCCL_HAVE_CUDA
  // Set while the state lives on the device (steps with device buffers, core/device_optim.h);
  // impl is then stale until syncToHost() hands the state back.
  std::unique_ptr<obccl::optim::DeviceOnebitAdam> device;
#endif
};

namespace obccl::api {
namespace {

// The communicator to record errors on: the optimizer's when the handle is live.
obcclComm_t commOf(obcclOnebitAdam_t opt) {
  return opt != nullptr && opt->magic == kOptimMagic ? opt->comm : nullptr;
}

Result<optim::OnebitAdam*> liveOptimizer(obcclOnebitAdam_t opt) {
  if (opt == nullptr) return nullArgument("opt");
  if (opt->magic != kOptimMagic)
    return invalidArgument("opt is not a live 1-bit Adam optimizer (destroyed or never created)");
  return opt->impl.get();
}

Status hostOnly(const void* ptr, const char* name) {
  if (core::classifyPointer(ptr) == core::MemoryKind::kDevice)
    return invalidArgument(std::string(name) + " is device memory; pass it in host memory");
  return Status::ok();
}

// Brings a device-resident state back into impl (before anything only the host optimizer does).
Status syncToHost(obcclOnebitAdam_t opt) {
#if OBCCL_HAVE_CUDA
  if (opt->device == nullptr) return Status::ok();
  OBCCL_TRY(opt->device->toHost(opt->impl.get()));
  opt->device.reset();
#else
  (void)opt;
#endif
  return Status::ok();
}

#if OBCCL_HAVE_CUDA
// A step with device buffers (params and localGrads both device memory) runs on the device
// optimizer, which takes the state over on its first step. *handled says whether it ran.
Status deviceStep(obcclOnebitAdam_t opt, float* params, const float* localGrads, float lr,
                  obcclStream_t stream, bool* handled) {
  *handled = false;
  OBCCL_ASSIGN_OR_RETURN(core::MemoryKind kind,
                         core::callMemoryKind({{"params", params}, {"localGrads", localGrads}}));
  if (kind != core::MemoryKind::kDevice) return Status::ok();
  *handled = true;
  OBCCL_ASSIGN_OR_RETURN(core::Comm * c, readyComm(opt->comm));
  if (opt->device == nullptr) {
    OBCCL_ASSIGN_OR_RETURN(opt->device,
                           optim::DeviceOnebitAdam::fromHost(*opt->impl, *c, *opt->comm->device));
  }
  return opt->device->step(params, localGrads, lr, stream);
}
#endif

}  // namespace
}  // namespace obccl::api

using obccl::Status;
using obccl::api::guard;
using obccl::api::liveOptimizer;
using obccl::api::nullArgument;

extern "C" {

OBCCL_API obcclResult_t obcclOnebitAdamCreate(obcclComm_t comm, size_t count,
                                              const obcclOnebitAdamConfig_t* config,
                                              obcclOnebitAdam_t* opt) {
  return guard(comm, [&]() -> Status {
    if (opt == nullptr) return nullArgument("opt");
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, obccl::api::readyComm(comm));
    OBCCL_ASSIGN_OR_RETURN(obccl::optim::Options options, obccl::optim::optionsFromConfig(config));
    OBCCL_ASSIGN_OR_RETURN(auto impl, obccl::optim::OnebitAdam::create(
                                          obccl::optim::makeCommReducer(c), count, options));
    auto handle = std::make_unique<obcclOnebitAdam>();
    handle->comm = comm;
    handle->impl = std::move(impl);
    *opt = handle.release();
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamSetMomentumMask(obcclOnebitAdam_t opt, const float* mask) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
    if (mask == nullptr && o->count() > 0) return nullArgument("mask");
    OBCCL_TRY(obccl::api::hostOnly(mask, "mask"));
    OBCCL_TRY(obccl::api::syncToHost(opt));
    return o->setMomentumMask(mask);
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamStep(obcclOnebitAdam_t opt, float* params,
                                            const float* localGrads, float lr,
                                            obcclStream_t stream) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
    // NULL buffers are accepted only for an empty optimizer (count 0), as NCCL does.
    if (params == nullptr && o->count() > 0) return nullArgument("params");
    if (localGrads == nullptr && o->count() > 0) return nullArgument("localGrads");
#if OBCCL_HAVE_CUDA
    bool handled = false;
    OBCCL_TRY(obccl::api::deviceStep(opt, params, localGrads, lr, stream, &handled));
    if (handled) return Status::ok();
    OBCCL_TRY(obccl::api::syncToHost(opt));
#endif
    if (stream != nullptr)
      return obccl::invalidArgument(
          "stream is not NULL but params and localGrads are host memory (pass NULL with host "
          "buffers; a stream orders steps on device buffers)");
    OBCCL_TRY(obccl::api::hostOnly(params, "params"));
    OBCCL_TRY(obccl::api::hostOnly(localGrads, "localGrads"));
    return o->step(params, localGrads, lr);
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamGetInfo(obcclOnebitAdam_t opt, long long* step,
                                               obcclOptimStage_t* stage, long long* skippedSteps) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
    if (step == nullptr) return nullArgument("step");
    if (stage == nullptr) return nullArgument("stage");
    if (skippedSteps == nullptr) return nullArgument("skippedSteps");
#if OBCCL_HAVE_CUDA
    if (opt->device != nullptr) {
      *step = opt->device->stepCount();
      *stage = opt->device->stage();
      *skippedSteps = opt->device->skippedSteps();
      return Status::ok();
    }
#endif
    *step = o->stepCount();
    *stage = o->stage();
    *skippedSteps = o->skippedSteps();
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamStateSize(obcclOnebitAdam_t opt, size_t* bytes) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
    if (bytes == nullptr) return nullArgument("bytes");
    *bytes = o->stateSize();
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamSaveState(obcclOnebitAdam_t opt, void* buf, size_t bytes) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
    if (buf == nullptr) return nullArgument("buf");
    OBCCL_TRY(obccl::api::syncToHost(opt));
    return o->saveState(buf, bytes);
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamLoadState(obcclOnebitAdam_t opt, const void* buf,
                                                 size_t bytes) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
    if (buf == nullptr) return nullArgument("buf");
    OBCCL_TRY(obccl::api::syncToHost(opt));
    return o->loadState(buf, bytes);
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamResetErrorFeedback(obcclOnebitAdam_t opt) {
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto* o, liveOptimizer(opt));
#if OBCCL_HAVE_CUDA
    if (opt->device != nullptr) return opt->device->resetErrorFeedback();
#endif
    o->resetErrorFeedback();
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclOnebitAdamDestroy(obcclOnebitAdam_t opt) {
  // NULL is a no-op, as free() and NCCL's destroy calls.
  if (opt == nullptr) return obcclSuccess;
  return guard(obccl::api::commOf(opt), [&]() -> Status {
    OBCCL_TRY(liveOptimizer(opt).status());
    opt->magic = 0;
    delete opt;
    return Status::ok();
  });
}

}  // extern "C"
