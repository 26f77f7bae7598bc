// CRC32C (Castagnoli), hardware accelerated with SSE4.2 where the CPU has it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace obccl {

uint32_t crc32c(const void* data, size_t len, uint32_t crc = 0);

}  // namespace obccl
