// Element-wise reduction kernels for the host collectives. fp16 and bf16 are reduced in fp32 and
// rounded to nearest even on every store; integer sums and products wrap around (two's
// complement), as unsigned arithmetic does. The loops are plain so the compiler vectorizes them.
#pragma once

#include <cstddef>

#include "obccl/obccl.h"

namespace obccl::core {

// dst[i] = a[i] op b[i] for i < count. dst may be a or b (but not overlap them partially).
// obcclAvg reduces as obcclSum here: averaging is finished with reduceDivide or divideBy.
// The operand order is part of the result for max/min on signed zeros and NaNs, so callers that
// need identical results on several ranks pass the lower rank's data as `a`.
void reduce(void* dst, const void* a, const void* b, size_t count, obcclDataType_t datatype,
            obcclRedOp_t op);
// dst[i] = (a[i] + b[i]) / divisor, computed in fp32 (fp64 for float64) and rounded once: the
// last step of an average.
void reduceDivide(void* dst, const void* a, const void* b, size_t count, obcclDataType_t datatype,
                  int divisor);
// dst[i] = src[i] / divisor for floating types (dst may be src).
void divideBy(void* dst, const void* src, size_t count, obcclDataType_t datatype, int divisor);

}  // namespace obccl::core
