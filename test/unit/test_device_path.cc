// Host-side logic of the device-buffer path (src/core/device_*.cc) that needs no GPU: how a
// call's buffers are classified and mixing is refused, how the ranks choose between the direct
// and the staged compressed path, and the staged engine's frame geometry (which must be the host
// engine's). The GPU paths themselves are tested by test/multirank/test_gpu_device_*.cc.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if OBCCL_HAVE_CUDA
#include "core/device_compressed.h"
#include "core/device_path.h"
#endif

namespace obccl::core {
namespace {

#if OBCCL_HAVE_CUDA

using Kinds = std::vector<std::pair<std::string, MemoryKind>>;

TEST(DevicePathLogic, AllHostOrAllDeviceBuffersPass) {
  EXPECT_EQ(combineMemoryKinds({}).value(), MemoryKind::kHost);
  EXPECT_EQ(combineMemoryKinds(Kinds{{"sendbuff", MemoryKind::kHost}}).value(), MemoryKind::kHost);
  EXPECT_EQ(combineMemoryKinds(
                Kinds{{"sendbuff", MemoryKind::kDevice}, {"recvbuff", MemoryKind::kDevice}})
                .value(),
            MemoryKind::kDevice);
}

TEST(DevicePathLogic, MixedBuffersAreInvalidArgumentsNamingThem) {
  Result<MemoryKind> r = combineMemoryKinds(Kinds{{"sendbuff", MemoryKind::kDevice},
                                                  {"recvbuff", MemoryKind::kDevice},
                                                  {"workerError", MemoryKind::kHost},
                                                  {"serverError", MemoryKind::kDevice}});
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), obcclInvalidArgument);
  EXPECT_NE(r.status().message().find(
                "sendbuff, recvbuff, serverError are device memory but workerError is host memory"),
            std::string::npos)
      << r.status().message();
}

// Without a GPU (this machine) nothing is device memory, and classifying must not fail.
TEST(DevicePathLogic, HostPointersClassifyAsHost) {
  std::vector<float> a(4), b(4);
  Result<MemoryKind> r =
      callMemoryKind({{"sendbuff", a.data()}, {"recvbuff", b.data()}, {"unused", nullptr}});
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r.value(), MemoryKind::kHost);
}

DevicePeerInfo peer(const char* host, const char* bus, int32_t pref = kPreferAuto,
                    bool nccl = true) {
  DevicePeerInfo p;
  p.magic = 0x0bcc0dec;
  p.preference = pref;
  p.ncclBuilt = nccl ? 1 : 0;
  std::snprintf(p.hostName, sizeof(p.hostName), "%s", host);
  std::snprintf(p.hostId, sizeof(p.hostId), "%s:boot", host);
  std::snprintf(p.busId, sizeof(p.busId), "%s", bus);
  return p;
}

TEST(DevicePathLogic, OwnGpuPerRankWithNcclIsDirect) {
  auto c = decideDevicePath(
      {peer("a", "0000:01:00.0"), peer("a", "0000:02:00.0"), peer("b", "0000:01:00.0")});
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c.value().path, DevicePath::kDirect);
  EXPECT_EQ(c.value().exchange, DeviceExchangeKind::kNccl);
}

TEST(DevicePathLogic, SharedGpuOrMissingNcclIsStaged) {
  auto shared = decideDevicePath({peer("a", "0000:01:00.0"), peer("a", "0000:01:00.0")});
  ASSERT_TRUE(shared.isOk());
  EXPECT_EQ(shared.value().path, DevicePath::kStaged);
  EXPECT_NE(shared.value().reason.find("ranks 0 and 1 share GPU 0000:01:00.0 on a"),
            std::string::npos)
      << shared.value().reason;
  auto noNccl =
      decideDevicePath({peer("a", "0000:01:00.0"), peer("b", "0000:01:00.0", kPreferAuto, false)});
  ASSERT_TRUE(noNccl.isOk());
  EXPECT_EQ(noNccl.value().path, DevicePath::kStaged);
  EXPECT_NE(noNccl.value().reason.find("rank 1 was built without NCCL"), std::string::npos);
}

TEST(DevicePathLogic, StrongestPreferenceOfAnyRankWins) {
  auto staged = decideDevicePath({peer("a", "1", kPreferNccl), peer("b", "2", kPreferStaged)});
  EXPECT_EQ(staged.value().path, DevicePath::kStaged);
  auto host = decideDevicePath({peer("a", "1", kPreferHostExchange), peer("a", "1")});
  EXPECT_EQ(host.value().path, DevicePath::kDirect);
  EXPECT_EQ(host.value().exchange, DeviceExchangeKind::kHost);
  auto forced = decideDevicePath({peer("a", "1", kPreferNccl), peer("a", "1")});
  EXPECT_EQ(forced.value().exchange, DeviceExchangeKind::kNccl);
  auto impossible =
      decideDevicePath({peer("a", "1", kPreferNccl), peer("b", "2", kPreferAuto, false)});
  ASSERT_FALSE(impossible.isOk());
  EXPECT_EQ(impossible.status().code(), obcclInvalidUsage);
  auto test = decideDevicePath({peer("a", "1", kPreferTestExchange), peer("a", "1")});
  EXPECT_FALSE(test.isOk());
}

TEST(DevicePathLogic, UnknownPreferenceIsRejected) {
  EXPECT_EQ(parseDevicePreference("").value(), kPreferAuto);
  EXPECT_EQ(parseDevicePreference("host-exchange").value(), kPreferHostExchange);
  Result<DevicePreference> bad = parseDevicePreference("gpu");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("OBCCL_DEVICE_PATH = 'gpu'"), std::string::npos);
}

// The host engine's segmentation (compressed_allreduce.cc, makeGeometry): segments of
// segmentBytes of fp32, a multiple of 8 and of compressBlock, at most a chunk.
TEST(DevicePathLogic, StagedGeometryIsTheHostEngines) {
  CompressedLayout l = compressedLayout(1000, 3).value();  // Np 1008, c 336
  StagedGeometry g = stagedGeometry(l, 3, 1, 0, 1 << 20);
  EXPECT_EQ(g.seg, 336u);
  EXPECT_EQ(g.segs, 1u);
  EXPECT_EQ(g.p1Bytes(0), 4u + 42u);
  EXPECT_EQ(g.p2Bytes(0), 4u + 4u + 42u);
  g = stagedGeometry(l, 3, 1, 32, 400);  // 100 floats -> 96 (3 blocks of 32)
  EXPECT_EQ(g.seg, 96u);
  EXPECT_EQ(g.segs, 4u);
  EXPECT_EQ(g.segLen(3), 48u);
  EXPECT_EQ(g.scalesIn(3), 2u);
  EXPECT_EQ(g.firstBlock(3), 9u);
  g = stagedGeometry(l, 3, 0, 512, 64);  // a block longer than the chunk
  EXPECT_EQ(g.seg, 336u);
  EXPECT_EQ(g.scalesIn(0), 1u);
}

#else

TEST(DevicePathLogic, NotBuilt) { GTEST_SKIP() << "obccl was built without CUDA"; }

#endif  // OBCCL_HAVE_CUDA

}  // namespace
}  // namespace obccl::core
