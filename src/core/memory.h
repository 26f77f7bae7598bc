// Where a user buffer lives. Today every pointer is host memory; the CUDA helper fills
// classifyPointer (cudaPointerGetAttributes) and the collectives branch on it.
#pragma once

namespace obccl::core {

enum class MemoryKind { kHost, kDevice };

// The kind of memory ptr points to (host for nullptr).
MemoryKind classifyPointer(const void* ptr);

}  // namespace obccl::core
