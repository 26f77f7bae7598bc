// Internal to the device layer (includes cuda_runtime.h): CUDA errors as Status values.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "util/status.h"

namespace obccl::device {

// Ok for cudaSuccess; otherwise obcclUnhandledCudaError naming `what` and the CUDA error.
Status cudaStatus(cudaError_t err, const std::string& what);

}  // namespace obccl::device
