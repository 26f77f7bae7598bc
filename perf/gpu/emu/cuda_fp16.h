// Host emulation of the cuda_fp16.h conversions the device layer uses (see cuda_runtime.h here).
#pragma once

#include <cstdint>

#include "util/half.h"

struct __half {
  uint16_t x;
};
inline __half __ushort_as_half(uint16_t v) { return __half{v}; }
inline float __half2float(__half h) { return obccl::halfToFloat(h.x); }
