// Micro-benchmarks of the codec kernels (src/codec) for every variant this CPU supports, next to
// memcpy measured in the same run. Each kernel reports the minimal bytes it must read and write
// per second and that figure divided by memcpy's (vs_memcpy: fastest call against the fastest of
// the memcpys interleaved with the kernel's calls), memcpy counting both its read and its write.
// Sizes: one far past the last-level cache and one that fits in L2.
//
//   obccl_micro [--benchmark_filter=...] [--benchmark_repetitions=N]
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "codec/codec.h"

namespace obccl::codec {
namespace {

constexpr int64_t kSizes[] = {int64_t{1} << 18, int64_t{1} << 26};  // elements

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Page-aligned buffers, filled once with pseudo-random bytes (a fixed LCG, so runs compare) and
// kept for the whole run so that no benchmark times page faults.
uint8_t* buffer(const std::string& name, size_t bytes) {
  static std::map<std::string, std::unique_ptr<uint8_t, FreeDeleter>> pool;
  std::string key = name + "/" + std::to_string(bytes);
  auto it = pool.find(key);
  if (it != pool.end()) return it->second.get();
  size_t rounded = (bytes + 4095) / 4096 * 4096;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, rounded));
  uint64_t state = std::hash<std::string>{}(key) | 1;
  for (size_t i = 0; i < rounded; i += 8) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    std::memcpy(p + i, &state, 8);
  }
  pool.emplace(key, std::unique_ptr<uint8_t, FreeDeleter>(p));
  return p;
}

// Finite fp32 values around 1, so no kernel hits a denormal or NaN slow path by accident.
float* floats(const std::string& name, size_t n) {
  auto* f = reinterpret_cast<float*>(buffer(name + ":f", n * 4));
  static std::map<float*, bool> initialised;
  if (!initialised[f]) {
    for (size_t i = 0; i < n; ++i)
      f[i] = static_cast<float>(static_cast<int>(i * 2654435761u % 2001) - 1000) / 997.0f;
    initialised[f] = true;
  }
  return f;
}

// One memcpy of `bytes` (between buffers kept for the run), timed.
double timedMemcpy(size_t bytes) {
  uint8_t* src = buffer("memcpy-src", bytes);
  uint8_t* dst = buffer("memcpy-dst", bytes);
  auto t0 = std::chrono::steady_clock::now();
  std::memcpy(dst, src, bytes);
  benchmark::ClobberMemory();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs body once per benchmark iteration and, outside the timed region, one memcpy of
// memcpyBytes after it, so that both see the same machine. Reports bytesPerCall per second as
// bytes_per_second (Google Benchmark's mean), best_bytes_per_second (fastest iteration), and
// vs_memcpy: that over the fastest memcpy's rate (read plus write bytes) of the same iterations.
template <typename F>
void measure(benchmark::State& state, double bytesPerCall, size_t memcpyBytes, F&& body) {
  double best = 1e30, bestCopy = 1e30;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    body();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    state.PauseTiming();
    bestCopy = std::min(bestCopy, timedMemcpy(memcpyBytes));
    state.ResumeTiming();
  }
  state.SetBytesProcessed(
      static_cast<int64_t>(bytesPerCall * static_cast<double>(state.iterations())));
  state.counters["best_bytes_per_second"] = bytesPerCall / best;
  state.counters["vs_memcpy"] = (bytesPerCall / best) / (2.0 * memcpyBytes / bestCopy);
}

void bmMemcpy(benchmark::State& state) {
  size_t bytes = static_cast<size_t>(state.range(0)) * 4;
  uint8_t* src = buffer("memcpy-src", bytes);
  uint8_t* dst = buffer("memcpy-dst", bytes);
  measure(state, 2.0 * bytes, bytes, [&] {
    std::memcpy(dst, src, bytes);
    benchmark::ClobberMemory();
  });
}

// The ceiling for read-mostly kernels: reading the two fp32 streams a worker encode reads (x and
// e), doing nothing with them but an xor.
void bmRead(benchmark::State& state) {
  size_t n = static_cast<size_t>(state.range(0));
  const auto* x = reinterpret_cast<const uint64_t*>(floats("x", n));
  const auto* e = reinterpret_cast<const uint64_t*>(floats("e", n));
  measure(state, 8.0 * n, n * 4, [&] {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i < n / 2; i += 2) {
      a ^= x[i];
      b ^= e[i];
      c ^= x[i + 1];
      d ^= e[i + 1];
    }
    benchmark::DoNotOptimize(a ^ b ^ c ^ d);
  });
}

void bmWorkerEncode(benchmark::State& state, const Kernels* k, obcclDataType_t dt) {
  size_t n = static_cast<size_t>(state.range(0)), es = dt == obcclFloat32 ? 4 : 2;
  const void* x =
      dt == obcclFloat32 ? static_cast<const void*>(floats("x", n)) : buffer("x16", n * 2);
  const float* e = floats("e", n);
  uint8_t* bits = buffer("bits0", n / 8);
  measure(state, static_cast<double>(n) * (es + 4) + n / 8.0, n * 4, [&] {
    NormAccumulator acc;
    k->workerEncode(x, dt, n, e, n, 0, bits, &acc);
    benchmark::DoNotOptimize(acc.lane[0]);
    benchmark::ClobberMemory();
  });
}

void bmWorkerUpdate(benchmark::State& state, const Kernels* k, obcclDataType_t dt) {
  size_t n = static_cast<size_t>(state.range(0)), es = dt == obcclFloat32 ? 4 : 2;
  const void* x =
      dt == obcclFloat32 ? static_cast<const void*>(floats("x", n)) : buffer("x16", n * 2);
  float* e = floats("e", n);
  // With a scale of 0 every call adds x to e: the values stay finite and normal for far more
  // calls than a run makes.
  const float a = 0.0f;
  measure(state, static_cast<double>(n) * (es + 8), n * 4, [&] {
    k->workerUpdate(x, dt, n, e, n, 0, &a);
    benchmark::ClobberMemory();
  });
}

struct ServerInputs {
  std::vector<const uint8_t*> bits;
  std::vector<float> scaleValues;
  std::vector<const float*> scales;
  ServerSpan span;
};

ServerInputs serverInputs(size_t nranks, size_t n) {
  ServerInputs in;
  in.scaleValues.assign(nranks, 0.5f);
  for (size_t r = 0; r < nranks; ++r) {
    in.bits.push_back(buffer("bits" + std::to_string(r), n / 8));
    in.scales.push_back(&in.scaleValues[r]);
  }
  in.span = ServerSpan{nranks, in.bits.data(), in.scales.data(), floats("s", n)};
  return in;
}

void bmServerNorm(benchmark::State& state, const Kernels* k) {
  size_t n = static_cast<size_t>(state.range(0)), nranks = static_cast<size_t>(state.range(1));
  ServerInputs in = serverInputs(nranks, n);
  measure(state, static_cast<double>(n) * (4 + nranks / 8.0), n * 4, [&] {
    NormAccumulator acc;
    k->serverNorm(in.span, n, 0, &acc);
    benchmark::DoNotOptimize(acc.lane[0]);
  });
}

void bmServerEncode(benchmark::State& state, const Kernels* k) {
  size_t n = static_cast<size_t>(state.range(0)), nranks = static_cast<size_t>(state.range(1));
  ServerInputs in = serverInputs(nranks, n);
  uint8_t* out = buffer("server-bits", n / 8);
  float* sOut = floats("s-out", n);
  const float b = 0.25f;
  measure(state, static_cast<double>(n) * (8 + (nranks + 1) / 8.0), n * 4, [&] {
    k->serverEncode(in.span, n, 0, &b, out, sOut);
    benchmark::ClobberMemory();
  });
}

void bmDecode(benchmark::State& state, const Kernels* k, obcclDataType_t dt) {
  size_t n = static_cast<size_t>(state.range(0)), es = dt == obcclFloat32 ? 4 : 2;
  const uint8_t* bits = buffer("bits0", n / 8);
  void* y = buffer("y", n * es);
  const float b = 0.75f;
  measure(state, static_cast<double>(n) * es + n / 8.0, n * 4, [&] {
    k->decode(bits, n, 0, &b, y, dt);
    benchmark::ClobberMemory();
  });
}

const char* typeName(obcclDataType_t dt) { return dt == obcclFloat32 ? "fp32" : "bf16"; }

void registerAll() {
  auto sizes = [](benchmark::internal::Benchmark* b) {
    for (int64_t n : kSizes) b->Arg(n);
    b->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  auto serverSizes = [](benchmark::internal::Benchmark* b) {
    for (int64_t n : kSizes)
      for (int64_t r : {2, 4, 8}) b->Args({n, r});
    b->ArgNames({"", "n"})->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  sizes(benchmark::RegisterBenchmark("memcpy", bmMemcpy));
  sizes(benchmark::RegisterBenchmark("read_x_and_e", bmRead));
  for (int v = 0; v < kNumVariants; ++v) {
    const Kernels* k = kernelsFor(static_cast<Variant>(v));
    if (k == nullptr) continue;
    std::string p = k->name;
    for (obcclDataType_t dt : {obcclFloat32, obcclBfloat16}) {
      std::string t = typeName(dt);
      sizes(
          benchmark::RegisterBenchmark((p + "/worker_encode/" + t).c_str(), bmWorkerEncode, k, dt));
      sizes(
          benchmark::RegisterBenchmark((p + "/worker_update/" + t).c_str(), bmWorkerUpdate, k, dt));
    }
    serverSizes(benchmark::RegisterBenchmark((p + "/server_norm").c_str(), bmServerNorm, k));
    serverSizes(benchmark::RegisterBenchmark((p + "/server_encode").c_str(), bmServerEncode, k));
    for (obcclDataType_t dt : {obcclFloat32, obcclBfloat16})
      sizes(benchmark::RegisterBenchmark((p + "/decode/" + typeName(dt)).c_str(), bmDecode, k, dt));
  }
}

}  // namespace
}  // namespace obccl::codec

int main(int argc, char** argv) {
  obccl::codec::registerAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
