// Launch geometry and launch-error reporting shared by the kernel files.
#include <string>

#include "device/kernel_common.cuh"

namespace obccl::device::detail {

Result<unsigned> gridFor(size_t work, size_t unitsPerBlock) {
  int dev = 0;
  OBCCL_TRY(cudaStatus(cudaGetDevice(&dev), "cudaGetDevice"));
  int sms = 0;
  OBCCL_TRY(cudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
                       "cudaDeviceGetAttribute(multiProcessorCount)"));
  size_t wanted = (work + unitsPerBlock - 1) / unitsPerBlock;
  size_t cap = static_cast<size_t>(sms > 0 ? sms : 1) * kBlocksPerSm;
  size_t blocks = wanted < cap ? wanted : cap;
  return static_cast<unsigned>(blocks > 0 ? blocks : 1);
}

Status launchStatus(const char* kernel) {
  return cudaStatus(cudaGetLastError(), std::string("launch of ") + kernel);
}

}  // namespace obccl::device::detail
