#include "core/memory.h"

#if OBCCL_HAVE_CUDA
#include "device/device.h"
#endif

namespace obccl::core {

// With the CUDA layer built, asks the runtime (cudaPointerGetAttributes); it answers "host" on
// machines without a device. Without it every pointer is host memory.
MemoryKind classifyPointer(const void* ptr) {
#if OBCCL_HAVE_CUDA
  if (ptr != nullptr) {
    Result<bool> device = device::isDevicePointer(ptr);
    if (device.isOk() && device.value()) return MemoryKind::kDevice;
  }
#else
  (void)ptr;
#endif
  return MemoryKind::kHost;
}

}  // namespace obccl::core
