// The compressed allreduce on device buffers against the host path, on both device paths: staged
// (ranks sharing a GPU: packed bytes over the host transports) and direct (device-resident
// consensus; its exchange here is OBCCL_DEVICE_PATH=host-exchange, and under the CUDA emulation
// also an in-process exchange that never waits, with the host waits counted). Skips without a
// CUDA device; perf/gpu/emulate_integration.sh runs it on the CPU.
#include <condition_variable>
#include <iterator>
#include <mutex>
#include <vector>

#include "multirank/gpu_device_harness.h"

#if defined(OBCCL_DEVICE_EMULATION)
#include "core/comm.h"
#include "core/device_exchange.h"
#endif

namespace obccl_gpu_test {
namespace {

struct Case {
  int ranks;
  int block;
  obcclDataType_t dt;
  size_t count;
  size_t segmentBytes;  // small values give several frames per chunk
};

// Every rank's buffers for a sequence of calls: inputs, outputs and error buffers (host copies).
struct Outcome {
  std::vector<std::vector<uint8_t>> y;
  std::vector<std::vector<uint8_t>> e, s;
  std::vector<obcclResult_t> rc;
};

// T calls on host buffers (device = false) or device buffers, with the same inputs; poison
// (rank, call) puts a NaN into that rank's input of that call.
Outcome runCalls(World& w, const Case& c, bool device, int calls, int poisonRank = -1,
                 int poisonCall = -1) {
  const int n = w.size();
  size_t worker = 0, server = 0;
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(c.count, w[0], &worker, &server), obcclSuccess);
  Outcome out;
  out.y.resize(n);
  out.e.resize(n);
  out.s.resize(n);
  out.rc.assign(n, obcclSuccess);
  runRanks<int>(
      n,
      [&](int r) {
        std::vector<float> e(worker, 0.0f), s(server, 0.0f);
        std::vector<uint8_t> y(c.count * elemBytes(c.dt), 0xcd);
        DevBuf de(e), ds(s), dy(y);
        cudaStream_t stream = nullptr;
        if (device) cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        for (int t = 0; t < calls; ++t) {
          std::vector<uint8_t> x = randomInput(c.dt, c.count, 1000 * t + r, 1.0f + r);
          if (r == poisonRank && t == poisonCall) {
            uint32_t nan = 0x7fc00000u;
            std::memcpy(x.data() + elemBytes(c.dt) * (c.count / 2), &nan, elemBytes(c.dt));
          }
          obcclResult_t rc;
          if (device) {
            DevBuf dx(x);
            rc = obcclCompressedAllReduce(dx.get(), dy.get(), c.count, c.dt, de.f(), ds.f(), w[r],
                                          stream);
          } else {
            rc = obcclCompressedAllReduce(x.data(), y.data(), c.count, c.dt, e.data(), s.data(),
                                          w[r], nullptr);
          }
          if (rc != obcclSuccess && out.rc[r] == obcclSuccess) out.rc[r] = rc;
        }
        if (device) {
          out.y[r] = dy.bytes();
          out.e[r] = de.bytes();
          out.s[r] = ds.bytes();
          cudaStreamDestroy(stream);
        } else {
          out.y[r] = y;
          out.e[r] = asBytes(e);
          out.s[r] = asBytes(s);
        }
        return 0;
      },
      &w.comms);
  return out;
}

void expectSame(const Outcome& dev, const Outcome& host, const std::string& what) {
  for (size_t r = 0; r < host.y.size(); ++r) {
    EXPECT_EQ(dev.rc[r], host.rc[r]) << what << " rank " << r;
    EXPECT_EQ(firstDifference(dev.y[r], host.y[r]), -1) << what << " output, rank " << r;
    EXPECT_EQ(firstDifference(dev.e[r], host.e[r]), -1) << what << " worker error, rank " << r;
    EXPECT_EQ(firstDifference(dev.s[r], host.s[r]), -1) << what << " server error, rank " << r;
  }
}

std::string describe(const Case& c) {
  return std::to_string(c.ranks) + " ranks, block " + std::to_string(c.block) + ", " +
         std::to_string(c.count) + " elements of type " + std::to_string(c.dt);
}

const Case kCases[] = {
    {2, 0, obcclFloat32, 10000, 0},    {3, 0, obcclFloat16, 7001, 4096},
    {3, 64, obcclBfloat16, 5000, 512}, {4, 256, obcclFloat32, 20000, 2048},
    {2, 24, obcclFloat32, 999, 0},
};

void checkPath(const char* path) {
  for (const Case& c : kCases) {
    World w = makeDeviceWorld(c.ranks, c.block, c.segmentBytes);
    ASSERT_TRUE(w.ok()) << w.error;
    ScopedEnv env("OBCCL_DEVICE_PATH", path);
    Outcome host = runCalls(w, c, false, 3);
    Outcome dev = runCalls(w, c, true, 3);
    expectSame(dev, host, std::string(path) + ": " + describe(c));
  }
}

TEST(DeviceCompressed, StagedPathSameBitsAsHost) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  checkPath("staged");
}

TEST(DeviceCompressed, DirectPathOverHostExchangeSameBitsAsHost) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  checkPath("host-exchange");
}

TEST(DeviceCompressed, OneRankDirectPathSameBitsAsHost) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  const Case c{1, 0, obcclFloat32, 3000, 0};
  World w = makeDeviceWorld(1);
  ASSERT_TRUE(w.ok()) << w.error;
  expectSame(runCalls(w, c, true, 3), runCalls(w, c, false, 3), describe(c));
}

// A host-buffer rank and a device-buffer rank meet in one staged call: the staged engine sends
// the host engine's frames. (The first device call of a communicator is collective setup, an
// internal exchange a host-buffer call would not match, so both ranks make call 0 on the device.)
TEST(DeviceCompressed, StagedRankInteroperatesWithHostRank) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  const Case c{2, 32, obcclFloat32, 4000, 1024};
  World w = makeDeviceWorld(2, c.block, c.segmentBytes);
  ASSERT_TRUE(w.ok()) << w.error;
  Outcome host = runCalls(w, c, false, 2);
  size_t worker = 0, server = 0;
  ASSERT_EQ(obcclCompressedAllReduceErrorCounts(c.count, w[0], &worker, &server), obcclSuccess);
  ScopedEnv env("OBCCL_DEVICE_PATH", "staged");
  std::vector<std::vector<uint8_t>> y(2);
  auto rcs = runRanks<obcclResult_t>(
      2,
      [&](int r) {
        DevBuf de(std::vector<float>(worker, 0.0f)), ds(std::vector<float>(server, 0.0f));
        DevBuf dy(std::vector<uint8_t>(c.count * 4));
        obcclResult_t rc = obcclSuccess;
        for (int t = 0; t < 2 && rc == obcclSuccess; ++t) {
          std::vector<uint8_t> x = randomInput(c.dt, c.count, 1000 * t + r, 1.0f + r);
          if (t == 1 && r == 1) {  // back to host buffers, continuing from the device state
            std::vector<uint8_t> e = de.bytes(), s = ds.bytes(), out(x.size());
            rc = obcclCompressedAllReduce(x.data(), out.data(), c.count, c.dt,
                                          reinterpret_cast<float*>(e.data()),
                                          reinterpret_cast<float*>(s.data()), w[r], nullptr);
            y[r] = out;
          } else {
            DevBuf dx(x);
            rc = obcclCompressedAllReduce(dx.get(), dy.get(), c.count, c.dt, de.f(), ds.f(), w[r],
                                          nullptr);
            y[r] = dy.bytes();
          }
        }
        return rc;
      },
      &w.comms);
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(rcs[r], obcclSuccess) << obcclGetLastError(w[r]);
    EXPECT_EQ(firstDifference(y[r], host.y[r]), -1) << "rank " << r;
  }
}

TEST(DeviceCompressed, StagedPathFailsEveryRankOnNonFiniteInput) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  const Case c{3, 0, obcclFloat32, 3000, 0};
  World w = makeDeviceWorld(c.ranks);
  ASSERT_TRUE(w.ok()) << w.error;
  ScopedEnv env("OBCCL_DEVICE_PATH", "staged");
  // Call 1 of 3 has a NaN on rank 2: it fails on every rank and changes no error buffer, so the
  // state after three calls equals the host path's (which fails the same call).
  Outcome host = runCalls(w, c, false, 3, 2, 1);
  Outcome dev = runCalls(w, c, true, 3, 2, 1);
  for (int r = 0; r < c.ranks; ++r) EXPECT_EQ(host.rc[r], obcclInvalidArgument);
  expectSame(dev, host, "staged with a NaN");
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("non-finite input on rank(s) 2"),
            std::string::npos)
      << obcclGetLastError(w[0]);
}

// On the direct path the call cannot fail synchronously: every rank skips it on the device and
// obcclCommGetAsyncError reports it once.
TEST(DeviceCompressed, DirectPathSkipsNonFiniteInputAndReportsItAsynchronously) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  const Case c{3, 64, obcclFloat32, 3000, 0};
  World w = makeDeviceWorld(c.ranks, c.block);
  ASSERT_TRUE(w.ok()) << w.error;
  ScopedEnv env("OBCCL_DEVICE_PATH", "host-exchange");
  Outcome host = runCalls(w, c, false, 3, 2, 1);
  Outcome dev = runCalls(w, c, true, 3, 2, 1);  // copies back after cudaDeviceSynchronize
  for (int r = 0; r < c.ranks; ++r) {
    EXPECT_EQ(dev.rc[r], obcclSuccess);
    host.rc[r] = obcclSuccess;
  }
  expectSame(dev, host, "direct with a NaN");
  for (int r = 0; r < c.ranks; ++r) {
    obcclResult_t async = obcclSuccess;
    ASSERT_EQ(obcclCommGetAsyncError(w[r], &async), obcclSuccess);
    EXPECT_EQ(async, obcclInvalidArgument) << "rank " << r;
    EXPECT_NE(std::string(obcclGetLastError(w[r])).find("non-finite input on rank(s) 2"),
              std::string::npos)
        << obcclGetLastError(w[r]);
    ASSERT_EQ(obcclCommGetAsyncError(w[r], &async), obcclSuccess);
    EXPECT_EQ(async, obcclSuccess) << "reported once";
  }
}

#if defined(OBCCL_DEVICE_EMULATION)
// An exchange between the rank threads of this process that copies directly (emulated device
// memory is host memory) and never calls a synchronising CUDA function.
class ThreadHub {
 public:
  explicit ThreadHub(int n) : n_(n), sends_(n) {}
  // All ranks post their send buffer; each then copies what it needs; nobody leaves early.
  obccl::Status exchange(int rank, const void* send, const std::function<void()>& copy) {
    OBCCL_TRY(arrive([&] { sends_[rank] = static_cast<const uint8_t*>(send); }));
    copy();
    return arrive([] {});
  }
  const uint8_t* send(int rank) const { return sends_[rank]; }

 private:
  obccl::Status arrive(const std::function<void()>& before) {
    std::unique_lock<std::mutex> lock(mu_);
    before();
    uint64_t gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return obccl::Status::ok();
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return generation_ != gen; }))
      return obccl::timeoutError("test exchange: a rank did not arrive");
    return obccl::Status::ok();
  }
  const int n_;
  std::vector<const uint8_t*> sends_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

class ThreadExchange : public obccl::core::DeviceExchange {
 public:
  ThreadExchange(std::shared_ptr<ThreadHub> hub, int rank, int n) : hub_(hub), rank_(rank), n_(n) {}
  obccl::Status alltoall(const void* send, void* recv, size_t bytes, void*) override {
    return hub_->exchange(rank_, send, [&] {
      for (int i = 0; i < n_; ++i)
        std::memcpy(static_cast<uint8_t*>(recv) + i * bytes, hub_->send(i) + rank_ * bytes, bytes);
    });
  }
  obccl::Status allgather(const void* send, void* recv, size_t bytes, void*) override {
    return hub_->exchange(rank_, send, [&] {
      for (int i = 0; i < n_; ++i)
        std::memcpy(static_cast<uint8_t*>(recv) + i * bytes, hub_->send(i), bytes);
    });
  }
  bool hostSyncFree() const override { return true; }
  const char* name() const override { return "test"; }

 private:
  std::shared_ptr<ThreadHub> hub_;
  int rank_, n_;
};

// The direct engine with an exchange that never waits (and the one-rank engine): bitwise the host
// results, and not one host synchronisation inside a call once the scratch memory is allocated
// (the first call).
struct FactoryGuard {
  ~FactoryGuard() { obccl::core::setDeviceExchangeFactoryForTesting({}); }
};

TEST(DeviceCompressedEmulated, DirectPathMakesNoHostSynchronisation) {
  FactoryGuard guard;
  std::vector<Case> cases(std::begin(kCases), std::end(kCases));
  cases.push_back({1, 0, obcclFloat32, 3000, 0});  // one rank: device copies, no exchange
  cases.push_back({1, 64, obcclFloat16, 3001, 1024});
  for (const Case& c : cases) {
    auto hub = std::make_shared<ThreadHub>(c.ranks);
    obccl::core::setDeviceExchangeFactoryForTesting(
        [hub](obccl::core::Comm& comm)
            -> obccl::Result<std::unique_ptr<obccl::core::DeviceExchange>> {
          return std::unique_ptr<obccl::core::DeviceExchange>(
              new ThreadExchange(hub, comm.rank(), comm.nranks()));
        });
    World w = makeDeviceWorld(c.ranks, c.block, c.segmentBytes);
    ASSERT_TRUE(w.ok()) << w.error;
    Outcome host = runCalls(w, c, false, 3);
    size_t worker = 0, server = 0;
    ASSERT_EQ(obcclCompressedAllReduceErrorCounts(c.count, w[0], &worker, &server), obcclSuccess);
    std::vector<uint64_t> syncs(c.ranks);
    Outcome dev;
    dev.y.resize(c.ranks), dev.e.resize(c.ranks), dev.s.resize(c.ranks);
    dev.rc.assign(c.ranks, obcclSuccess);
    runRanks<int>(
        c.ranks,
        [&](int r) {
          DevBuf de(std::vector<float>(worker, 0.0f)), ds(std::vector<float>(server, 0.0f));
          DevBuf dy(std::vector<uint8_t>(c.count * elemBytes(c.dt), 0xcd));
          for (int t = 0; t < 3; ++t) {
            DevBuf dx(randomInput(c.dt, c.count, 1000 * t + r, 1.0f + r));
            uint64_t before = obccl_emu::hostSyncs();
            obcclResult_t rc = obcclCompressedAllReduce(dx.get(), dy.get(), c.count, c.dt, de.f(),
                                                        ds.f(), w[r], nullptr);
            if (t > 0) syncs[r] += obccl_emu::hostSyncs() - before;
            if (rc != obcclSuccess) dev.rc[r] = rc;
          }
          dev.y[r] = dy.bytes();
          dev.e[r] = de.bytes();
          dev.s[r] = ds.bytes();
          return 0;
        },
        &w.comms);
    expectSame(dev, host, "test exchange: " + describe(c));
    for (int r = 0; r < c.ranks; ++r)
      EXPECT_EQ(syncs[r], 0u) << "host synchronisations in calls 2 and 3, rank " << r << ", "
                              << describe(c);
  }
}
#endif  // OBCCL_DEVICE_EMULATION

}  // namespace
}  // namespace obccl_gpu_test
