// The host CUDA emulation behind perf/gpu/emu/cuda_runtime.h: a launch runs its blocks one after
// another; each thread of a block is a ucontext coroutine that yields only while it waits at a
// warp shuffle or a __syncthreads, so those see every lane's value exactly as on a GPU.
#include <ucontext.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "cuda_runtime.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace obccl_emu {
namespace {

constexpr size_t kStackBytes = 64 * 1024;

struct Thread {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
};

// A warp shuffle is two barriers: all lanes publish, then all lanes read before the next one.
struct Warp {
  uint64_t slot[32];
  int arrived = 0;
  int read = 0;
  unsigned published = 0;
  unsigned consumed = 0;
};

struct Block {
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  ucontext_t scheduler;
  std::function<void()> body;
  int current = 0;
  int syncArrived = 0;
  unsigned syncGeneration = 0;
};

Block* active = nullptr;

// One grid at a time in the process: the scheduler state above is shared.
std::mutex& launchMutex() {
  static std::mutex m;
  return m;
}

thread_local uint64_t syncCalls = 0;

void yieldToScheduler() { swapcontext(&active->threads[active->current].ctx, &active->scheduler); }

void threadMain() {
  active->body();
  active->threads[active->current].done = true;
  swapcontext(&active->threads[active->current].ctx, &active->scheduler);
}

// Counts the caller in; the last to arrive advances `generation`, the others wait for it.
void barrier(int& arrived, int expected, unsigned& generation) {
  unsigned mine = generation;
  if (++arrived == expected) {
    arrived = 0;
    ++generation;
    return;
  }
  while (generation == mine) yieldToScheduler();
}

void runBlock(unsigned index, unsigned threads, const std::function<void()>& body) {
  Block block;
  block.body = body;
  block.threads.resize(threads);
  block.warps.resize(threads / 32);
  active = &block;
  for (Thread& t : block.threads) {
    t.stack.resize(kStackBytes);
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack.data();
    t.ctx.uc_stack.ss_size = t.stack.size();
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, threadMain, 0);
  }
  for (bool running = true; running;) {
    running = false;
    for (unsigned t = 0; t < threads; ++t) {
      if (block.threads[t].done) continue;
      running = true;
      block.current = static_cast<int>(t);
      threadIdx = dim3{t, 0, 0};
      blockIdx = dim3{index, 0, 0};
      swapcontext(&block.scheduler, &block.threads[t].ctx);
    }
  }
  active = nullptr;
}

}  // namespace

uint64_t shuffle(uint64_t v, int srcLane) {
  Warp& w = active->warps[threadIdx.x / 32];
  w.slot[threadIdx.x % 32] = v;
  barrier(w.arrived, 32, w.published);
  uint64_t r = w.slot[srcLane];
  barrier(w.read, 32, w.consumed);
  return r;
}

void syncthreads() {
  barrier(active->syncArrived, static_cast<int>(active->threads.size()), active->syncGeneration);
}

void launch(unsigned grid, unsigned block, std::function<void()> body) {
  if (block == 0 || block % 32 != 0) {
    std::fprintf(stderr, "emu: block of %u threads is not a multiple of 32\n", block);
    std::abort();
  }
  std::lock_guard<std::mutex> lock(launchMutex());
  gridDim = dim3{grid, 1, 1};
  blockDim = dim3{block, 1, 1};
  for (unsigned b = 0; b < grid; ++b) runBlock(b, block, body);
}

uint64_t hostSyncs() { return syncCalls; }

}  // namespace obccl_emu

namespace {

std::map<const char*, size_t>& allocations() {
  static std::map<const char*, size_t> m;
  return m;
}

std::mutex& allocationsMutex() {
  static std::mutex m;
  return m;
}

void countSync() { ++obccl_emu::syncCalls; }

}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  std::snprintf(prop->name, sizeof(prop->name), "host emulation");
  prop->multiProcessorCount = 2;
  prop->totalGlobalMem = size_t{1} << 30;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = 2;
  return cudaSuccess;
}
// Two "SMs" with one block each: grids stay small, so every grid-stride loop goes round.
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void*, int, size_t) {
  *blocks = 1;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulation"; }
const char* cudaGetErrorString(cudaError_t) { return "error in the host emulation"; }

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  attr->type = cudaMemoryTypeUnregistered;
  std::lock_guard<std::mutex> lock(allocationsMutex());
  const char* p = static_cast<const char*>(ptr);
  auto it = allocations().upper_bound(p);
  if (it != allocations().begin()) {
    --it;
    if (p < it->first + it->second) attr->type = cudaMemoryTypeDevice;
  }
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = std::malloc(bytes);
  std::memset(*ptr, 0xa5, bytes);  // not zero, like fresh device memory
  std::lock_guard<std::mutex> lock(allocationsMutex());
  allocations()[static_cast<const char*>(*ptr)] = bytes;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  countSync();
  {
    std::lock_guard<std::mutex> lock(allocationsMutex());
    allocations().erase(static_cast<const char*>(ptr));
  }
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  *ptr = std::malloc(bytes);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  countSync();
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  countSync();
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                            cudaStream_t) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  countSync();
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  countSync();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  countSync();
  return cudaSuccess;
}
cudaError_t cudaDeviceGetPCIBusId(char* busId, int len, int device) {
  std::snprintf(busId, static_cast<size_t>(len), "0000:%02x:00.0", device);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  static char token;
  *stream = &token;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new double(0.0);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  *static_cast<double*>(event) =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = static_cast<float>(*static_cast<double*>(end) - *static_cast<double*>(start));
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete static_cast<double*>(event);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  return cudaEventCreate(event);
}
// Streams are synchronous, so every recorded event is complete.
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  countSync();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
