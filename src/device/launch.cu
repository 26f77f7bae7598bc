// Launch geometry and launch-error reporting shared by the kernel files.
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "device/kernel_common.cuh"

namespace obccl::device::detail {

Result<unsigned> gridFor(const void* kernel, int threads, size_t work, size_t unitsPerBlock) {
  int dev = 0;
  OBCCL_TRY(cudaStatus(cudaGetDevice(&dev), "cudaGetDevice"));
  // Resident blocks per (kernel, device, block size), computed once.
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int>, size_t> resident;
  size_t cap = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = resident.find({kernel, dev, threads});
    if (it != resident.end()) cap = it->second;
  }
  if (cap == 0) {
    int sms = 0, perSm = 0;
    OBCCL_TRY(cudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
                         "cudaDeviceGetAttribute(multiProcessorCount)"));
    OBCCL_TRY(cudaStatus(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, threads, 0),
                         "cudaOccupancyMaxActiveBlocksPerMultiprocessor"));
    cap = static_cast<size_t>(std::max(sms, 1)) * static_cast<size_t>(std::max(perSm, 1));
    std::lock_guard<std::mutex> lock(mu);
    resident[{kernel, dev, threads}] = cap;
  }
  size_t wanted = (work + unitsPerBlock - 1) / unitsPerBlock;
  size_t blocks = std::min(wanted, cap);
  return static_cast<unsigned>(std::max<size_t>(blocks, 1));
}

Status launchStatus(const char* kernel) {
  return cudaStatus(cudaGetLastError(), std::string("launch of ") + kernel);
}

}  // namespace obccl::device::detail
