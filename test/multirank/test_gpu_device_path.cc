// Device buffers in the collectives and the compressed allreduce, through the public C API: the
// device path must give bitwise what the host path gives for the same inputs, order its work on
// the caller's stream, refuse mixed host/device buffers, and report non-finite input on both
// compressed paths (synchronously on the staged one, through obcclCommGetAsyncError on the
// direct one). Skips without a CUDA device; perf/gpu/emulate_integration.sh runs it on the CPU.
#include <functional>
#include <memory>

#include "multirank/gpu_device_harness.h"

namespace obccl_gpu_test {
namespace {

constexpr int kRanks = 3;

// Runs one collective per rank on host buffers and on device buffers (same inputs) and expects
// the same output bytes. make(r) gives rank r's input bytes; call(r, send, recv) runs it.
void expectSameOnDevice(World& w, const std::function<std::vector<uint8_t>(int)>& make,
                        size_t recvBytes,
                        const std::function<obcclResult_t(int, const void*, void*)>& call) {
  const int n = w.size();
  std::vector<std::vector<uint8_t>> hostOut(n, std::vector<uint8_t>(recvBytes, 0xee));
  auto rcs = runRanks<obcclResult_t>(
      n,
      [&](int r) {
        std::vector<uint8_t> in = make(r);
        return call(r, in.data(), hostOut[r].data());
      },
      &w.comms);
  for (int r = 0; r < n; ++r) ASSERT_EQ(rcs[r], obcclSuccess) << obcclGetLastError(w[r]);
  std::vector<std::vector<uint8_t>> devOut(n);
  rcs = runRanks<obcclResult_t>(
      n,
      [&](int r) {
        DevBuf in(make(r));
        DevBuf out(std::vector<uint8_t>(recvBytes, 0xee));
        obcclResult_t rc = call(r, in.get(), out.get());
        devOut[r] = out.bytes();
        return rc;
      },
      &w.comms);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(rcs[r], obcclSuccess) << obcclGetLastError(w[r]);
    EXPECT_EQ(firstDifference(devOut[r], hostOut[r]), -1) << "rank " << r;
  }
}

TEST(DeviceCollectives, SameBytesAsHostBuffers) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  World w = makeDeviceWorld(kRanks);
  ASSERT_TRUE(w.ok()) << w.error;
  const size_t count = 1000;
  auto input = [&](size_t elems) {
    return [elems](int r) { return randomInput(obcclFloat32, elems, 100 + r); };
  };
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  obcclStream_t st = stream;
  expectSameOnDevice(w, input(count), count * 4, [&](int r, const void* s, void* d) {
    return obcclAllReduce(s, d, count, obcclFloat32, obcclSum, w[r], st);
  });
  expectSameOnDevice(w, input(count), count * 4, [&](int r, const void* s, void* d) {
    return obcclBroadcast(s, d, count, obcclFloat32, 1, w[r], st);
  });
  expectSameOnDevice(w, input(count), kRanks * count * 4, [&](int r, const void* s, void* d) {
    return obcclAllGather(s, d, count, obcclFloat32, w[r], st);
  });
  expectSameOnDevice(w, input(kRanks * count), count * 4, [&](int r, const void* s, void* d) {
    return obcclReduceScatter(s, d, count, obcclFloat32, obcclMax, w[r], st);
  });
  expectSameOnDevice(w, input(kRanks * count), kRanks * count * 4,
                     [&](int r, const void* s, void* d) {
                       return obcclAlltoAll(s, d, count, obcclFloat32, w[r], nullptr);
                     });
  cudaStreamDestroy(stream);
}

TEST(DeviceCollectives, InPlaceAllReduceOnDevice) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  World w = makeDeviceWorld(2);
  ASSERT_TRUE(w.ok()) << w.error;
  const size_t count = 77;
  auto rcs = runRanks<int>(
      2,
      [&](int r) {
        std::vector<int32_t> v(count);
        for (size_t i = 0; i < count; ++i) v[i] = static_cast<int32_t>(i * (r + 1));
        DevBuf d(v);
        obcclResult_t rc =
            obcclAllReduce(d.get(), d.get(), count, obcclInt32, obcclSum, w[r], nullptr);
        std::vector<uint8_t> out = d.bytes();
        int wrong = rc == obcclSuccess ? 0 : 1000;
        for (size_t i = 0; i < count; ++i) {
          int32_t got;
          std::memcpy(&got, &out[4 * i], 4);
          wrong += got != static_cast<int32_t>(3 * i);
        }
        return wrong;
      },
      &w.comms);
  EXPECT_EQ(rcs[0], 0);
  EXPECT_EQ(rcs[1], 0);
}

TEST(DeviceCollectives, MixedHostAndDeviceBuffersAreInvalidArguments) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  World w = makeDeviceWorld(1);
  ASSERT_TRUE(w.ok()) << w.error;
  DevBuf dev(std::vector<float>(64, 1.0f));
  std::vector<float> host(64, 1.0f);
  EXPECT_EQ(obcclAllReduce(dev.get(), host.data(), 64, obcclFloat32, obcclSum, w[0], nullptr),
            obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0]))
                .find("sendbuff is device memory but recvbuff is "
                      "host memory"),
            std::string::npos)
      << obcclGetLastError(w[0]);
  size_t worker = 0, server = 0;
  ASSERT_EQ(obcclCompressedAllReduceErrorCounts(64, w[0], &worker, &server), obcclSuccess);
  DevBuf e(std::vector<float>(worker, 0.0f));
  std::vector<float> s(server, 0.0f);
  EXPECT_EQ(obcclCompressedAllReduce(dev.get(), dev.get(), 64, obcclFloat32, e.f(), s.data(), w[0],
                                     nullptr),
            obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("serverError is host memory"),
            std::string::npos)
      << obcclGetLastError(w[0]);
  // The communicator is still usable.
  EXPECT_EQ(obcclAllReduce(host.data(), host.data(), 64, obcclFloat32, obcclSum, w[0], nullptr),
            obcclSuccess);
}

}  // namespace
}  // namespace obccl_gpu_test
