// Shared pieces of gpu_check (see gpu_check.cu): options, result rows, timing and comparison
// helpers.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "device/device.h"

namespace obccl::gpucheck {

#define GPU_CHECK_CUDA(expr)                                                        \
  do {                                                                              \
    cudaError_t err_ = (expr);                                                      \
    if (err_ != cudaSuccess) {                                                      \
      std::fprintf(stderr, "gpu_check: %s: %s\n", #expr, cudaGetErrorString(err_)); \
      std::exit(2);                                                                 \
    }                                                                               \
  } while (0)

// DESIGN.md section 7: fused kernels move their minimal bytes at >= 80% of memcpy bandwidth.
constexpr double kTargetRatio = 0.80;

// Exits with status 2 and the message when st is not ok (a setup failure, not a wrong result).
void checkOk(const Status& st, const char* what);

struct Options {
  size_t elems = size_t{64} << 20;
  int reps = 30;
  int ranks = 8;
  size_t block = 0;
  int device = 0;
};

struct Row {
  Row(std::string k, std::string t, size_t n, double b)
      : kernel(std::move(k)), dtype(std::move(t)), elems(n), bytes(b) {}
  std::string kernel;
  std::string dtype;
  size_t elems = 0;
  double bytes = 0;  // minimal bytes the kernel reads and writes
  double kernelMs = 0;
  double copyMs = 0;
  double copyBytes = 0;
  bool ok = true;
  std::string check;  // what was compared, or the first mismatch
  double ratio() const { return (bytes / kernelMs) / (2.0 * copyBytes / copyMs); }
};

struct Bench {
  Options opt;
  cudaStream_t stream = nullptr;
  device::DeviceBuffer copySrc, copyDst;
  std::vector<Row> rows;
  // Times launch() and a device-to-device copy of row.bytes / 2 bytes (the same traffic), both
  // as medians over opt.reps, and appends the row.
  void measure(Row row, const std::function<void()>& launch);
};

// Runs f(lo, hi) over [0, n) on all host cores.
void parallelFor(size_t n, const std::function<void(size_t, size_t)>& f);
// Reproducible values uniform in (-scale, scale).
std::vector<float> randomFloats(size_t n, float scale, uint64_t seed);
std::vector<uint8_t> encodeAs(const std::vector<float>& x, obcclDataType_t type);
std::string typeName(obcclDataType_t t);

device::DeviceBuffer devAlloc(size_t bytes);
void copyDevice(void* dst, const void* src, size_t bytes);
template <class T>
device::DeviceBuffer toDevice(const std::vector<T>& host) {
  device::DeviceBuffer d = devAlloc(host.size() * sizeof(T));
  GPU_CHECK_CUDA(
      cudaMemcpy(d.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
std::vector<T> fromDevice(const void* d, size_t count) {
  std::vector<T> host(count);
  GPU_CHECK_CUDA(cudaMemcpy(host.data(), d, count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

bool sameFloat(float a, float b);
// Adds `what` to row.check when same(i) holds for every i < n; otherwise marks the row failed
// with the number of differences and the first index.
void expectEqual(Row& row, const char* what, size_t n, const std::function<bool(size_t)>& same);
// Per-scale sums of squares of f(i), accumulated accurately on the host, against the GPU's sums
// (1e-12 relative); the GPU's scales must be rmsScale of its sums, bitwise.
void checkNorms(Row& row, const device::ScaleLayout& l, const std::function<float(size_t)>& f,
                const std::vector<double>& gpuSums, const std::vector<float>& gpuScales);
// Byte k of the packed signs of f.
uint8_t signByte(const std::function<float(size_t)>& f, size_t k);

// The rows (gpu_check_rows.cu).
void runWorkerRows(Bench& bench);
void runServerRows(Bench& bench);
void runDecodeRows(Bench& bench);
void runOptimRows(Bench& bench);

}  // namespace obccl::gpucheck
