// Shared by the test_gpu_device_*.cc multirank tests: device buffers through the public C API,
// one thread per rank. They skip without a usable CUDA device, run on a real GPU
// (perf/gpu_check.sh) and under the host emulation of CUDA (perf/gpu/emulate_integration.sh),
// where "device memory" is host memory that the emulated runtime classifies as device memory.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "multirank/harness.h"
#include "obccl/obccl.h"
#include "util/half.h"

namespace obccl_gpu_test {

using obccl_test::runRanks;
using obccl_test::World;

// Empty when a device is usable, else why not.
inline std::string noDeviceReason() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(err);
  if (count == 0) return "no CUDA device: cudaGetDeviceCount returned 0";
  return "";
}

#define OBCCL_GPU_SKIP_WITHOUT_DEVICE() \
  if (std::string why = ::obccl_gpu_test::noDeviceReason(); !why.empty()) GTEST_SKIP() << why

// A device allocation (cudaMalloc), filled from or read back to host bytes.
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t bytes) : bytes_(bytes) {
    EXPECT_EQ(cudaMalloc(&ptr_, bytes > 0 ? bytes : 16), cudaSuccess);
  }
  template <class T>
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size() * sizeof(T)) {
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  DevBuf(DevBuf&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  float* f() const { return static_cast<float*>(ptr_); }
  // The bytes, after the device finished everything (cudaDeviceSynchronize).
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out(bytes_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  std::vector<float> floats() const {
    std::vector<uint8_t> b = bytes();
    std::vector<float> out(b.size() / 4);
    std::memcpy(out.data(), b.data(), out.size() * 4);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Sets an environment variable for a scope (the tests' ranks are threads of this process).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

inline size_t elemBytes(obcclDataType_t dt) { return dt == obcclFloat32 ? 4 : 2; }

// count random values of dt (normal, a few signed zeros), as stored bytes.
inline std::vector<uint8_t> randomInput(obcclDataType_t dt, size_t count, uint64_t seed,
                                        float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<uint8_t> out(count * elemBytes(dt));
  for (size_t i = 0; i < count; ++i) {
    float v = normal(rng);
    if (rng() % 61 == 0) v = (rng() & 1) ? 0.0f : -0.0f;
    if (dt == obcclFloat32) {
      std::memcpy(&out[4 * i], &v, 4);
    } else {
      uint16_t h = dt == obcclFloat16 ? obccl::floatToHalf(v) : obccl::floatToBf16(v);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

// n communicators with config->compressBlock = block and OBCCL_SEGMENT_BYTES = segmentBytes
// (0: default) while they initialise.
inline World makeDeviceWorld(int n, int block = 0, size_t segmentBytes = 0) {
  std::unique_ptr<ScopedEnv> seg;
  if (segmentBytes > 0)
    seg.reset(new ScopedEnv("OBCCL_SEGMENT_BYTES", std::to_string(segmentBytes)));
  World w;
  obcclUniqueId id;
  w.result = obcclGetUniqueId(&id);
  if (w.result != obcclSuccess) {
    w.error = obcclGetLastError(nullptr);
    return w;
  }
  std::vector<obcclComm_t> comms(n, nullptr);
  std::vector<std::string> errors(n);
  obcclConfig_t cfg = obccl_test::makeConfig("shm,tcp");
  cfg.compressBlock = block;
  auto rcs = runRanks<obcclResult_t>(n, [&](int r) {
    obcclResult_t rc = obcclCommInitRankConfig(&comms[r], n, id, r, &cfg);
    if (rc != obcclSuccess) errors[r] = obcclGetLastError(nullptr);
    return rc;
  });
  w.comms = comms;
  for (int r = 0; r < n; ++r)
    if (rcs[r] != obcclSuccess && w.ok()) w.result = rcs[r], w.error = errors[r];
  if (!w.ok()) w.destroy();
  return w;
}

// Index of the first differing byte, or -1.
inline long firstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return static_cast<long>(i);
  return -1;
}

inline std::vector<uint8_t> asBytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

}  // namespace obccl_gpu_test
