// obccl_gpu_staged: the compressed allreduce on device buffers with several ranks sharing one GPU
// (so the staged path: packed bytes through pinned memory and the host transports), against the
// same calls on host buffers. Run it under the launcher, one process per rank:
//
//   obcclrun -n 4 obccl_gpu_staged [--elems N] [--reps R] [--block B] [--device D]
//
// Every rank makes three calls on both paths with the same inputs and counts the elements of the
// output and of its error buffers that differ (#wrong, summed over ranks; 0 expected: the paths
// are bitwise equal), then times R device calls and R host calls (median per call, the slowest
// rank's, device calls including the stream synchronisation). Rank 0 prints one line,
//   STAGED_ROW ranks type elements MiB device_ms host_ms wrong OK|FAIL
// which perf/gpu_check.sh appends to its final table. Exit status 1 when some element differs,
// 2 when the check could not run.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "obccl/obccl.h"

namespace {

struct Options {
  size_t elems = size_t{16} << 20;
  int reps = 10;
  int block = 0;
  int device = 0;
};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "obccl_gpu_staged: %s\n", what.c_str());
  std::exit(2);
}

void check(obcclResult_t rc, obcclComm_t comm, const char* what) {
  if (rc != obcclSuccess) fail(std::string(what) + ": " + obcclGetLastError(comm));
}

void checkCuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(std::string(what) + ": " + cudaGetErrorString(err));
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (i + 1 >= argc)
      fail("usage: obccl_gpu_staged [--elems N] [--reps R] [--block B] [--device D]");
    const char* v = argv[i + 1];
    if (a == "--elems")
      o.elems = std::strtoull(v, nullptr, 0);
    else if (a == "--reps")
      o.reps = std::atoi(v);
    else if (a == "--block")
      o.block = std::atoi(v);
    else if (a == "--device")
      o.device = std::atoi(v);
    else
      fail("unknown option " + a);
  }
  if (o.elems == 0 || o.reps < 1) fail("need --elems >= 1 and --reps >= 1");
  return o;
}

// A device buffer with host copies in and out.
struct Dev {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Dev(size_t b) : bytes(b) { checkCuda(cudaMalloc(&p, b), "cudaMalloc"); }
  ~Dev() { cudaFree(p); }
  void put(const void* h) { checkCuda(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice), "upload"); }
  template <class T>
  std::vector<T> get() const {
    std::vector<T> h(bytes / sizeof(T));
    checkCuda(cudaMemcpy(h.data(), p, bytes, cudaMemcpyDeviceToHost), "download");
    return h;
  }
  float* f() const { return static_cast<float*>(p); }
};

size_t differing(const std::vector<float>& a, const std::vector<float>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return n;
}

double medianMs(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double nowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  checkCuda(cudaSetDevice(o.device), "cudaSetDevice");
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.compressBlock = o.block;
  obcclComm_t comm = nullptr;
  check(obcclCommInitFromEnv(&comm, &cfg), nullptr, "obcclCommInitFromEnv");
  int rank = 0, n = 1;
  check(obcclCommUserRank(comm, &rank), comm, "rank");
  check(obcclCommCount(comm, &n), comm, "count");
  size_t workerCount = 0, serverCount = 0;
  check(obcclCompressedAllReduceErrorCounts(o.elems, comm, &workerCount, &serverCount), comm,
        "error counts");
  cudaStream_t stream = nullptr;
  checkCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");

  std::vector<float> x(o.elems), y(o.elems), e(workerCount, 0.0f), s(serverCount, 0.0f);
  Dev dx(o.elems * 4), dy(o.elems * 4), de(workerCount * 4), ds(serverCount * 4);
  de.put(e.data());
  ds.put(s.data());
  std::mt19937 rng(1234u + static_cast<unsigned>(rank));
  std::normal_distribution<float> normal(0.0f, 1.0f + rank);

  // Three calls on both paths with the same inputs; every output and error element compared.
  unsigned long long wrong = 0;
  for (int t = 0; t < 3; ++t) {
    for (float& v : x) v = normal(rng);
    dx.put(x.data());
    check(obcclCompressedAllReduce(x.data(), y.data(), o.elems, obcclFloat32, e.data(), s.data(),
                                   comm, nullptr),
          comm, "host compressed allreduce");
    check(obcclCompressedAllReduce(dx.p, dy.p, o.elems, obcclFloat32, de.f(), ds.f(), comm, stream),
          comm, "device compressed allreduce");
    checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    wrong += differing(dy.get<float>(), y) + differing(de.get<float>(), e) +
             differing(ds.get<float>(), s);
  }

  std::vector<double> devMs, hostMs;
  for (int r = 0; r < o.reps; ++r) {
    check(obcclBarrier(comm), comm, "barrier");
    double t0 = nowMs();
    check(obcclCompressedAllReduce(dx.p, dy.p, o.elems, obcclFloat32, de.f(), ds.f(), comm, stream),
          comm, "device compressed allreduce");
    checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    devMs.push_back(nowMs() - t0);
  }
  for (int r = 0; r < o.reps; ++r) {
    check(obcclBarrier(comm), comm, "barrier");
    double t0 = nowMs();
    check(obcclCompressedAllReduce(x.data(), y.data(), o.elems, obcclFloat32, e.data(), s.data(),
                                   comm, nullptr),
          comm, "host compressed allreduce");
    hostMs.push_back(nowMs() - t0);
  }
  double times[2] = {medianMs(devMs), medianMs(hostMs)};
  check(obcclAllReduce(times, times, 2, obcclFloat64, obcclMax, comm, nullptr), comm, "max time");
  int64_t total = static_cast<int64_t>(wrong);
  check(obcclAllReduce(&total, &total, 1, obcclInt64, obcclSum, comm, nullptr), comm, "sum wrong");
  if (rank == 0) {
    std::printf("STAGED_ROW %d f32 %zu %.1f %.3f %.3f %lld %s\n", n, o.elems,
                static_cast<double>(o.elems) * 4 / (1 << 20), times[0], times[1],
                static_cast<long long>(total), total == 0 ? "OK" : "FAIL");
    std::fflush(stdout);
  }
  cudaStreamDestroy(stream);
  check(obcclCommDestroy(comm), nullptr, "destroy");
  return total == 0 ? 0 : 1;
}
