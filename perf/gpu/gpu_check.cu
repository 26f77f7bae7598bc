// gpu_check: times each obccl device kernel against a device-to-device cudaMemcpyAsync moving
// the same number of bytes in the same run (CUDA events, median of many repetitions), and checks
// every kernel's output bit for bit against the host reference (device/reference.h, which the
// unit tests hold equal to the CPU codec) for the same inputs and scales. No GoogleTest.
//
//   gpu_check [--elems N] [--reps R] [--ranks n] [--block B] [--device D]
//
// ratio = (minimal bytes the kernel reads and writes / kernel time) / (2 * copy bytes / copy
// time); DESIGN.md section 7 asks for >= 0.80. The table is printed last. Exit status: 0 when
// every output matched, 1 when some output differs, 2 on a setup error.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "device/reference.h"
#include "gpu_check.h"

namespace obccl::gpucheck {

using device::DeviceBuffer;
using device::ScaleLayout;

void checkOk(const Status& st, const char* what) {
  if (!st.isOk()) {
    std::fprintf(stderr, "gpu_check: %s: %s\n", what, st.message().c_str());
    std::exit(2);
  }
}

namespace {

size_t hostThreads() {
  return std::min<size_t>(64, std::max(1u, std::thread::hardware_concurrency()));
}

// Median of `reps` timings of launch() on the stream, each bracketed by events, after one
// untimed warm-up launch.
double medianMs(const std::function<void()>& launch, int reps, cudaStream_t stream) {
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) GPU_CHECK_CUDA(cudaEventCreate(&e));
  launch();
  for (int r = 0; r < reps; ++r) {
    GPU_CHECK_CUDA(cudaEventRecord(ev[2 * r], stream));
    launch();
    GPU_CHECK_CUDA(cudaEventRecord(ev[2 * r + 1], stream));
  }
  GPU_CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> ms(reps);
  for (int r = 0; r < reps; ++r) {
    GPU_CHECK_CUDA(cudaEventElapsedTime(&ms[r], ev[2 * r], ev[2 * r + 1]));
  }
  for (auto& e : ev) GPU_CHECK_CUDA(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

Options parseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (value == nullptr) a = "--help";
    if (a == "--elems") {
      o.elems = std::strtoull(value, nullptr, 0);
    } else if (a == "--reps") {
      o.reps = std::atoi(value);
    } else if (a == "--ranks") {
      o.ranks = std::atoi(value);
    } else if (a == "--block") {
      o.block = std::strtoull(value, nullptr, 0);
    } else if (a == "--device") {
      o.device = std::atoi(value);
    } else {
      std::fprintf(stderr,
                   "usage: gpu_check [--elems N] [--reps R] [--ranks n] [--block B] "
                   "[--device D]\n");
      std::exit(2);
    }
    ++i;
  }
  if (o.elems < 1024 || o.reps < 1 || o.ranks < 1 || o.block % 8 != 0) {
    std::fprintf(stderr, "gpu_check: need elems >= 1024, reps >= 1, ranks >= 1, block %% 8 == 0\n");
    std::exit(2);
  }
  return o;
}

int printTable(const Bench& bench) {
  size_t failed = 0, below = 0;
  for (const Row& r : bench.rows) {
    failed += r.ok ? 0 : 1;
    below += r.ratio() >= kTargetRatio ? 0 : 1;
  }
  std::printf("\n");
  for (const Row& r : bench.rows) {
    if (!r.ok)
      std::printf("MISMATCH %s %s: %s\n", r.kernel.c_str(), r.dtype.c_str(), r.check.c_str());
  }
  std::printf(
      "gpu_check: %zu kernels, %zu with outputs differing from the CPU reference; %zu "
      "below the %.2f bandwidth ratio target\n\n",
      bench.rows.size(), failed, below, kTargetRatio);
  std::printf("%-16s %-5s %11s %10s %10s %10s %10s %7s %-6s %s\n", "kernel", "type", "elements",
              "MiB", "kernel_ms", "kern_GB/s", "copy_GB/s", "ratio", "target", "bitwise");
  for (const Row& r : bench.rows) {
    double kernGbs = r.bytes / (r.kernelMs * 1e6);
    double copyGbs = 2.0 * r.copyBytes / (r.copyMs * 1e6);
    std::printf("%-16s %-5s %11zu %10.1f %10.4f %10.1f %10.1f %7.3f %-6s %s\n", r.kernel.c_str(),
                r.dtype.c_str(), r.elems, r.bytes / (1 << 20), r.kernelMs, kernGbs, copyGbs,
                r.ratio(), r.ratio() >= kTargetRatio ? "met" : "BELOW", r.ok ? "OK" : "FAIL");
  }
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

}  // namespace

void Bench::measure(Row row, const std::function<void()>& launch) {
  row.kernelMs = medianMs(launch, opt.reps, stream);
  size_t copyBytes = static_cast<size_t>(row.bytes / 2) / 16 * 16;
  copyBytes = std::min(copyBytes, copySrc.size());
  row.copyBytes = static_cast<double>(copyBytes);
  row.copyMs = medianMs(
      [&] {
        GPU_CHECK_CUDA(cudaMemcpyAsync(copyDst.data(), copySrc.data(), copyBytes,
                                       cudaMemcpyDeviceToDevice, stream));
      },
      opt.reps, stream);
  std::printf("  %-16s %-5s %9.4f ms  ratio %.3f  %s%s\n", row.kernel.c_str(), row.dtype.c_str(),
              row.kernelMs, row.ratio(), row.ok ? "" : "MISMATCH ", row.check.c_str());
  std::fflush(stdout);
  rows.push_back(row);
}

void parallelFor(size_t n, const std::function<void(size_t, size_t)>& f) {
  size_t step = (n + hostThreads() - 1) / hostThreads();
  std::vector<std::thread> pool;
  for (size_t lo = 0; lo < n; lo += step) pool.emplace_back(f, lo, std::min(n, lo + step));
  for (auto& t : pool) t.join();
}

std::vector<float> randomFloats(size_t n, float scale, uint64_t seed) {
  std::vector<float> v(n);
  parallelFor(n, [&](size_t lo, size_t hi) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + lo * 0xbf58476d1ce4e5b9ull + 1;
    for (size_t i = lo; i < hi; ++i) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      float u = static_cast<float>(s >> 40) / static_cast<float>(1ull << 24);  // [0, 1)
      v[i] = (u - 0.5f) * 2.0f * scale;
    }
  });
  return v;
}

std::vector<uint8_t> encodeAs(const std::vector<float>& x, obcclDataType_t type) {
  size_t es = type == obcclFloat32 ? 4 : 2;
  std::vector<uint8_t> out(x.size() * es);
  parallelFor(x.size(), [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) device::ref::storeElement(out.data(), type, i, x[i]);
  });
  return out;
}

std::string typeName(obcclDataType_t t) {
  return t == obcclFloat32 ? "f32" : t == obcclFloat16 ? "f16" : "bf16";
}

DeviceBuffer devAlloc(size_t bytes) {
  Result<DeviceBuffer> r = DeviceBuffer::allocate(bytes > 0 ? bytes : 16);
  checkOk(r.status(), "device allocation");
  return std::move(r).value();
}

void copyDevice(void* dst, const void* src, size_t bytes) {
  GPU_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

bool sameFloat(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

void expectEqual(Row& row, const char* what, size_t n, const std::function<bool(size_t)>& same) {
  size_t step = (n + hostThreads() - 1) / hostThreads();
  size_t parts = (n + step - 1) / step;
  std::vector<size_t> counts(parts, 0), firsts(parts, SIZE_MAX);
  std::vector<std::thread> pool;
  for (size_t t = 0; t < parts; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t * step; i < std::min(n, (t + 1) * step); ++i) {
        if (!same(i) && counts[t]++ == 0) firsts[t] = i;
      }
    });
  }
  for (auto& th : pool) th.join();
  size_t bad = 0, first = SIZE_MAX;
  for (size_t t = 0; t < parts; ++t) {
    bad += counts[t];
    first = std::min(first, firsts[t]);
  }
  if (bad == 0) {
    row.check += row.check.empty() ? what : std::string(", ") + what;
    return;
  }
  row.ok = false;
  row.check = std::string(what) + ": " + std::to_string(bad) + " of " + std::to_string(n) +
              " differ (first at " + std::to_string(first) + ")";
}

void checkNorms(Row& row, const ScaleLayout& l, const std::function<float(size_t)>& f,
                const std::vector<double>& gpuSums, const std::vector<float>& gpuScales) {
  const size_t ns = l.numScales();
  size_t step = (l.count + hostThreads() - 1) / hostThreads();
  std::vector<std::vector<long double>> partial((l.count + step - 1) / step,
                                                std::vector<long double>(ns, 0.0L));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < partial.size(); ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t * step; i < std::min(l.count, (t + 1) * step); ++i) {
        long double v = f(i);
        partial[t][device::ref::scaleIndex(l, i)] += v * v;
      }
    });
  }
  for (auto& th : pool) th.join();
  for (size_t k = 0; k < ns; ++k) {
    long double sum = 0;
    for (auto& p : partial) sum += p[k];
    double rel =
        sum == 0 ? std::fabs(gpuSums[k]) : static_cast<double>(std::fabs((gpuSums[k] - sum) / sum));
    if (!(rel <= 1e-12)) {
      row.ok = false;
      row.check = "sum of squares " + std::to_string(k) + " off by " + std::to_string(rel);
      return;
    }
    if (!sameFloat(gpuScales[k], device::ref::rmsScale(gpuSums[k], l.scaleLen(k)))) {
      row.ok = false;
      row.check = "scale " + std::to_string(k) + " is not rmsScale(sum)";
      return;
    }
  }
  row.check += row.check.empty() ? "norms" : ", norms";
}

uint8_t signByte(const std::function<float(size_t)>& f, size_t k) {
  unsigned byte = 0;
  for (size_t j = 0; j < 8; ++j) {
    byte |= static_cast<unsigned>(device::ref::signBit(f(8 * k + j))) << (7 - j);
  }
  return static_cast<uint8_t>(byte);
}

}  // namespace obccl::gpucheck

int main(int argc, char** argv) {
  using namespace obccl::gpucheck;
  Options opt = parseOptions(argc, argv);
  if (!obccl::device::deviceAvailable()) {
    std::fprintf(stderr, "gpu_check: no usable CUDA device\n");
    return 2;
  }
  checkOk(obccl::device::setDevice(opt.device), "select device");
  cudaDeviceProp prop{};
  GPU_CHECK_CUDA(cudaGetDeviceProperties(&prop, opt.device));
  std::printf(
      "gpu_check: device %d: %s, %d SMs, %.1f GiB; elems %zu, ranks %d, block %zu, "
      "reps %d, host threads %u\n",
      opt.device, prop.name, prop.multiProcessorCount,
      static_cast<double>(prop.totalGlobalMem) / (1u << 30), opt.elems, opt.ranks, opt.block,
      opt.reps, std::thread::hardware_concurrency());
  Bench bench;
  bench.opt = opt;
  GPU_CHECK_CUDA(cudaStreamCreateWithFlags(&bench.stream, cudaStreamNonBlocking));
  // Half of the largest traffic of any row (warmup: 28 bytes per element, with slack).
  size_t maxCopy = opt.elems * 16;
  bench.copySrc = devAlloc(maxCopy);
  bench.copyDst = devAlloc(maxCopy);
  GPU_CHECK_CUDA(cudaMemset(bench.copySrc.data(), 1, maxCopy));

  runWorkerRows(bench);
  runServerRows(bench);
  runDecodeRows(bench);
  runOptimRows(bench);
  GPU_CHECK_CUDA(cudaStreamDestroy(bench.stream));
  return printTable(bench);
}
