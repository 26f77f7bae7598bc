// The object behind obcclComm_t. Only the api layer sees it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/comm.h"
#include "obccl/obccl.h"

#if OBCCL_HAVE_CUDA
namespace obccl::core {
class DeviceContext;
}  // namespace obccl::core
#endif

namespace obccl::api {

constexpr uint64_t kCommMagic = 0x0bcc1c0a11c0ffeeULL;

// State shared with a non-blocking init thread, which may outlive the handle after an abort.
struct InitState {
  std::mutex mu;
  bool done = false;
  Status result;  // valid once done
};

}  // namespace obccl::api

struct obcclComm {
  uint64_t magic = obccl::api::kCommMagic;  // cleared on destroy, to catch stale handles
  std::shared_ptr<obccl::core::Comm> comm;  // exists from the start of init
  std::shared_ptr<obccl::api::InitState> init;
  std::thread initThread;           // non-blocking init only
  std::atomic<int> activeCalls{0};  // calls inside the library, for abort and destroy
  std::mutex errorMu;
  std::string lastError;
#if OBCCL_HAVE_CUDA
  // Device-buffer state (core/device_path.h), made with the handle; destroyed before comm.
  std::shared_ptr<obccl::core::DeviceContext> device;
#endif
};
