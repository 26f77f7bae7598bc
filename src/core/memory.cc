#include "core/memory.h"

namespace obccl::core {

// Host-only build: the CUDA helper replaces this with a cudaPointerGetAttributes query when
// OBCCL_HAVE_CUDA is defined.
MemoryKind classifyPointer(const void* ptr) {
  (void)ptr;
  return MemoryKind::kHost;
}

}  // namespace obccl::core
