// Host emulation of the CUDA subset that obccl's device layer, its GPU tests and gpu_check use.
// perf/gpu/emulate.sh compiles those sources as plain C++ against this header (with
// OBCCL_DEVICE_EMULATION), so the kernels' logic (indexing, warp shuffles, packing, the fixed
// reduction trees) is checked bit for bit on machines without a GPU. It says nothing about speed.
//
// Semantics: host memory stands in for device memory, streams are synchronous, and a kernel
// launch runs its blocks one after another with every thread of a block as a coroutine that
// switches only at warp shuffles and __syncthreads (emu.cc). Launches and allocations may come
// from several host threads (ranks of a multi-rank test): they are serialised.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so one static per variable is one block's shared memory.
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
// Set by the scheduler whenever it resumes a thread.
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

struct float4 {
  float x, y, z, w;
};
struct uint2 {
  unsigned x, y;
};
struct uint4 {
  unsigned x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }

// One IEEE rounding each (volatile keeps the compiler from fusing or widening).
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fdiv_rn(float a, float b) {
  volatile float r = a / b;
  return r;
}
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) {
  volatile double r = a + b;
  return r;
}
inline double __dmul_rn(double a, double b) {
  volatile double r = a * b;
  return r;
}
inline double __ddiv_rn(double a, double b) {
  volatile double r = a / b;
  return r;
}
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __double2float_rn(double a) { return static_cast<float>(a); }
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
using std::isfinite;
inline int atomicExch(int* p, int v) {
  int old = *p;
  *p = v;
  return old;
}

namespace obccl_emu {
// Exchanges a value among the 32 lanes of the calling thread's warp: returns srcLane's value.
uint64_t shuffle(uint64_t v, int srcLane);
void syncthreads();
// Runs body() as grid blocks of `block` threads.
void launch(unsigned grid, unsigned block, std::function<void()> body);
// Calls on this thread that make the host wait for the device on a real GPU
// (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, synchronous cudaMemcpy and
// cudaMemset, cudaFree, cudaFreeHost): tests count them around code that must not wait.
uint64_t hostSyncs();
}  // namespace obccl_emu

template <class T>
inline T emuShuffle(T v, int srcLane) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = obccl_emu::shuffle(bits, srcLane);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int laneMask) {
  return emuShuffle(v, static_cast<int>(threadIdx.x % 32) ^ laneMask);
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta) {
  int lane = static_cast<int>(threadIdx.x % 32);
  int src = lane + static_cast<int>(delta);
  return emuShuffle(v, src < 32 ? src : lane);
}
inline void __syncthreads() { obccl_emu::syncthreads(); }

// Runtime API subset.
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorNotReady = 600 };
typedef void* cudaStream_t;
typedef void* cudaEvent_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault
};
enum cudaMemoryType {
  cudaMemoryTypeUnregistered,
  cudaMemoryTypeHost,
  cudaMemoryTypeDevice,
  cudaMemoryTypeManaged
};
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };
struct cudaDeviceProp {
  char name[256];
  int multiProcessorCount;
  size_t totalGlobalMem;
};
#define cudaStreamNonBlocking 1
#define cudaEventDisableTiming 2

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel,
                                                          int threads, size_t shared);
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceGetPCIBusId(char* busId, int len, int device);
