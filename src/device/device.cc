// CUDA runtime helpers behind device.h: availability, pointer classification, copies and RAII
// allocations. Compiled by the host compiler against cuda_runtime.h.
#include "device/device.h"

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "device/cuda_status.h"
#include "util/log.h"

namespace obccl::device {

Status cudaStatus(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return Status::ok();
  // Clear the (non-sticky) error so that it is not reported again by an unrelated call.
  (void)cudaGetLastError();
  return Status(obcclUnhandledCudaError,
                what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

Result<int> deviceCount() {
  int count = 0;
  OBCCL_TRY(cudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount"));
  return count;
}

bool deviceAvailable() {
  static const bool available = [] {
    Result<int> count = deviceCount();
    if (!count.isOk()) {
      OBCCL_INFO(kSubsysDevice, "no CUDA device: %s", count.status().message().c_str());
      return false;
    }
    return count.value() > 0;
  }();
  return available;
}

Result<bool> isDevicePointer(const void* ptr) {
  if (ptr == nullptr || !deviceAvailable()) return false;
  cudaPointerAttributes attr{};
  OBCCL_TRY(cudaStatus(cudaPointerGetAttributes(&attr, ptr), "cudaPointerGetAttributes"));
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

Result<int> currentDevice() {
  int dev = -1;
  OBCCL_TRY(cudaStatus(cudaGetDevice(&dev), "cudaGetDevice"));
  return dev;
}

Status setDevice(int device) {
  return cudaStatus(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
}

Status streamSynchronize(void* stream) {
  return cudaStatus(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)),
                    "cudaStreamSynchronize");
}

Status copyAsync(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return Status::ok();
  return cudaStatus(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream)),
      "cudaMemcpyAsync(" + std::to_string(bytes) + " bytes)");
}

Status memsetAsync(void* dst, int value, size_t bytes, void* stream) {
  if (bytes == 0) return Status::ok();
  return cudaStatus(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(stream)),
                    "cudaMemsetAsync(" + std::to_string(bytes) + " bytes)");
}

Result<DeviceBuffer> DeviceBuffer::allocate(size_t bytes) {
  DeviceBuffer buf;
  if (bytes == 0) return buf;
  OBCCL_TRY(
      cudaStatus(cudaMalloc(&buf.ptr_, bytes), "cudaMalloc(" + std::to_string(bytes) + " bytes)"));
  buf.bytes_ = bytes;
  return buf;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { reset(); }

void DeviceBuffer::reset() {
  if (ptr_ == nullptr) return;
  Status st = cudaStatus(cudaFree(ptr_), "cudaFree");
  if (!st.isOk()) OBCCL_WARN(kSubsysDevice, "%s", st.message().c_str());
  ptr_ = nullptr;
  bytes_ = 0;
}

Result<DeviceStream> DeviceStream::create() {
  DeviceStream s;
  cudaStream_t stream = nullptr;
  OBCCL_TRY(cudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                       "cudaStreamCreateWithFlags"));
  s.stream_ = stream;
  return s;
}

DeviceStream::DeviceStream(DeviceStream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)) {}

DeviceStream& DeviceStream::operator=(DeviceStream&& other) noexcept {
  if (this != &other) {
    reset();
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

DeviceStream::~DeviceStream() { reset(); }

void DeviceStream::reset() {
  if (stream_ == nullptr) return;
  Status st =
      cudaStatus(cudaStreamDestroy(static_cast<cudaStream_t>(stream_)), "cudaStreamDestroy");
  if (!st.isOk()) OBCCL_WARN(kSubsysDevice, "%s", st.message().c_str());
  stream_ = nullptr;
}

Result<PinnedBuffer> PinnedBuffer::allocate(size_t bytes) {
  PinnedBuffer buf;
  if (bytes == 0) return buf;
  OBCCL_TRY(cudaStatus(cudaMallocHost(&buf.ptr_, bytes),
                       "cudaMallocHost(" + std::to_string(bytes) + " bytes)"));
  buf.bytes_ = bytes;
  return buf;
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() { reset(); }

void PinnedBuffer::reset() {
  if (ptr_ == nullptr) return;
  Status st = cudaStatus(cudaFreeHost(ptr_), "cudaFreeHost");
  if (!st.isOk()) OBCCL_WARN(kSubsysDevice, "%s", st.message().c_str());
  ptr_ = nullptr;
  bytes_ = 0;
}

size_t ScaleLayout::scaleLen(size_t index) const {
  size_t bpc = blocksPerChunk();
  if (bpc == 0) return 0;
  size_t block = index % bpc;
  size_t start = block * blockLen;
  return chunkLen - start < blockLen ? chunkLen - start : blockLen;
}

Status ScaleLayout::validate() const {
  if (count == 0) return Status::ok();
  if (chunkLen == 0 || blockLen == 0 || count % 8 != 0 || chunkLen % 8 != 0 || blockLen % 8 != 0 ||
      count % chunkLen != 0) {
    return invalidArgument("scale layout count " + std::to_string(count) + ", chunkLen " +
                           std::to_string(chunkLen) + ", blockLen " + std::to_string(blockLen) +
                           ": lengths must be multiples of 8 and count a multiple of chunkLen");
  }
  return Status::ok();
}

ScaleLayout ScaleLayout::worker(size_t paddedCount, int nranks, size_t compressBlock) {
  if (compressBlock == 0 || paddedCount == 0 || nranks <= 0) {
    return ScaleLayout{paddedCount, paddedCount, paddedCount};
  }
  size_t c = paddedCount / static_cast<size_t>(nranks);
  return ScaleLayout{paddedCount, c, compressBlock < c ? compressBlock : c};
}

ScaleLayout ScaleLayout::server(size_t chunkCount, size_t compressBlock) {
  size_t block = compressBlock == 0 || compressBlock > chunkCount ? chunkCount : compressBlock;
  return ScaleLayout{chunkCount, chunkCount, block};
}

ScaleLayout ScaleLayout::gathered(size_t paddedCount, int nranks, size_t compressBlock) {
  if (paddedCount == 0 || nranks <= 0) return ScaleLayout{0, 0, 0};
  size_t c = paddedCount / static_cast<size_t>(nranks);
  size_t block = compressBlock == 0 || compressBlock > c ? c : compressBlock;
  return ScaleLayout{paddedCount, c, block};
}

}  // namespace obccl::device
