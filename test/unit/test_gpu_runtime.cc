// Device runtime helpers: scale layouts and argument checks (these run without a GPU), pointer
// classification, the non-finite check and the single-rank NCCL path (these need one).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "device/device.h"
#include "device/nccl_path.h"
#include "test_gpu_util.h"

namespace obccl::device {
namespace {

using namespace obccl::device::testing;

TEST(GpuLayout, WorkerServerAndGatheredLayouts) {
  ScaleLayout w = ScaleLayout::worker(1024, 4, 0);
  EXPECT_EQ(w.numScales(), 1u);
  EXPECT_EQ(w.scaleLen(0), 1024u);
  ScaleLayout wb = ScaleLayout::worker(1024, 4, 96);  // chunks of 256: blocks 96, 96, 64
  EXPECT_EQ(wb.blocksPerChunk(), 3u);
  EXPECT_EQ(wb.numScales(), 12u);
  EXPECT_EQ(wb.scaleLen(4), 96u);
  EXPECT_EQ(wb.scaleLen(5), 64u);
  EXPECT_TRUE(wb.validate().isOk());
  ScaleLayout big = ScaleLayout::worker(1024, 4, 4096);  // block larger than a chunk
  EXPECT_EQ(big.blockLen, 256u);
  EXPECT_EQ(big.numScales(), 4u);
  ScaleLayout s = ScaleLayout::server(256, 0);
  EXPECT_EQ(s.numScales(), 1u);
  ScaleLayout g = ScaleLayout::gathered(1024, 4, 96);
  EXPECT_EQ(g.numScales(), 12u);
  EXPECT_EQ(ScaleLayout::worker(0, 4, 0).numScales(), 0u);
  EXPECT_FALSE((ScaleLayout{100, 100, 100}).validate().isOk());
  EXPECT_FALSE((ScaleLayout{64, 24, 8}).validate().isOk());
  EXPECT_GE(normScratchBytes(w), sizeof(double));
}

TEST(GpuLayout, LaunchersRejectBadArgumentsBeforeTouchingTheDevice) {
  const ScaleLayout l = ScaleLayout::worker(64, 1, 0);
  float e[64] = {};
  double scratch[8];
  float scale;
  NormOutputs out{nullptr, &scale, nullptr};
  Status st =
      workerEncode(e, obcclInt32, 64, e, l, scratch, sizeof(scratch), out, nullptr, nullptr);
  EXPECT_EQ(st.code(), obcclInvalidArgument);
  EXPECT_NE(st.message().find("datatype"), std::string::npos) << st.message();
  st = workerEncode(e, obcclFloat32, 65, e, l, scratch, sizeof(scratch), out, nullptr, nullptr);
  EXPECT_EQ(st.code(), obcclInvalidArgument);
  st = workerEncode(e, obcclFloat32, 64, e, l, scratch, 0, out, nullptr, nullptr);
  EXPECT_EQ(st.code(), obcclInvalidArgument);
  EXPECT_NE(st.message().find("scratch"), std::string::npos) << st.message();
  RankPacked in;  // no ranks
  st = serverNorm(in, e, ScaleLayout::server(64, 0), scratch, sizeof(scratch), out, nullptr);
  EXPECT_EQ(st.code(), obcclInvalidArgument);
  st = decode(in, ScaleLayout::gathered(64, 2, 0), 64, e, obcclFloat32, nullptr);
  EXPECT_EQ(st.code(), obcclInvalidArgument);
  st = checkNonFinite(e, obcclFloat32, 4, nullptr, nullptr);
  EXPECT_EQ(st.code(), obcclInvalidArgument);
  // Empty work is a no-op everywhere.
  EXPECT_TRUE(workerEncode(nullptr, obcclFloat32, 0, nullptr, ScaleLayout{}, nullptr, 0, out,
                           nullptr, nullptr)
                  .isOk());
}

TEST(GpuRuntime, ClassifiesPointers) {
  int onStack = 0;
  Result<bool> host = isDevicePointer(&onStack);
  ASSERT_TRUE(host.isOk()) << host.status().message();
  EXPECT_FALSE(host.value());
  OBCCL_SKIP_WITHOUT_DEVICE();
  Result<DeviceBuffer> dev = DeviceBuffer::allocate(256);
  ASSERT_TRUE(dev.isOk()) << dev.status().message();
  Result<bool> isDev = isDevicePointer(static_cast<char*>(dev.value().data()) + 16);
  ASSERT_TRUE(isDev.isOk()) << isDev.status().message();
  EXPECT_TRUE(isDev.value());
  Result<PinnedBuffer> pinned = PinnedBuffer::allocate(256);
  ASSERT_TRUE(pinned.isOk()) << pinned.status().message();
  Result<bool> isPinnedDev = isDevicePointer(pinned.value().data());
  ASSERT_TRUE(isPinnedDev.isOk());
  EXPECT_FALSE(isPinnedDev.value());
  std::vector<float> heap(100);
  EXPECT_FALSE(isDevicePointer(heap.data()).value());
}

TEST(GpuRuntime, StreamCopiesRoundTrip) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  Result<DeviceStream> stream = DeviceStream::create();
  ASSERT_TRUE(stream.isOk()) << stream.status().message();
  std::vector<int> in(1000), out(1000, -1);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i * 3);
  DevMem d = devAlloc(in.size() * 4);
  OBCCL_ASSERT_OK(copyAsync(d.at(), in.data(), in.size() * 4, stream.value().get()));
  OBCCL_ASSERT_OK(copyAsync(out.data(), d.at(), in.size() * 4, stream.value().get()));
  OBCCL_ASSERT_OK(streamSynchronize(stream.value().get()));
  EXPECT_EQ(in, out);
}

// Places one bad value (or none) at `where` in a buffer of n elements of `type`, at `offset` bytes
// from 16-byte alignment, and checks the flag.
void checkOne(obcclDataType_t type, size_t n, long where, float bad, size_t offset) {
  std::mt19937_64 rng(n + where);
  std::vector<float> v = randomFloats(n, 1.0f, rng);
  v[n / 2] = type == obcclFloat32 ? std::numeric_limits<float>::max() : 60000.0f;
  v[n / 3] = 1e-40f;  // subnormal in fp32, zero in fp16: finite either way
  if (where >= 0) v[where] = bad;
  std::vector<uint8_t> bytes = encodeAs(v, type);
  DevMem d = upload(bytes, offset), flag = devAlloc(4);
  OBCCL_ASSERT_OK(checkNonFinite(d.at(), type, n, flag.as<int>(), nullptr));
  EXPECT_EQ(download<int>(flag.at(), 1)[0], where >= 0 ? 1 : 0)
      << typeName(type) << " n=" << n << " where=" << where << " offset=" << offset;
}

TEST(GpuRuntime, CheckNonFiniteFindsNanAndInfinity) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  for (obcclDataType_t t : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
    size_t es = elemSize(t);
    for (size_t n : {size_t{1}, size_t{13}, size_t{100003}}) {
      checkOne(t, n, -1, 0.0f, 0);
      checkOne(t, n, static_cast<long>(n - 1), std::nanf(""), 0);
      checkOne(t, n, 0, INFINITY, es);
      checkOne(t, n, static_cast<long>(n / 2 + (n > 1)), -INFINITY, 3 * es);
    }
  }
}

TEST(GpuNccl, SingleRankAlltoallAndAllgather) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  if (!ncclAvailable()) GTEST_SKIP() << "obccl was built without NCCL";
  Result<NcclUniqueIdBytes> id = ncclNewUniqueId();
  ASSERT_TRUE(id.isOk()) << id.status().message();
  Result<std::unique_ptr<NcclComm>> comm = NcclComm::create(1, 0, id.value(), 60000);
  ASSERT_TRUE(comm.isOk()) << comm.status().message();
  Result<DeviceStream> stream = DeviceStream::create();
  ASSERT_TRUE(stream.isOk());
  std::vector<uint8_t> in(4096);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7 + 1);
  DevMem send = upload(in), recv = devAlloc(in.size()), gathered = devAlloc(in.size());
  OBCCL_ASSERT_OK(comm.value()->alltoall(send.at(), recv.at(), in.size(), stream.value().get()));
  OBCCL_ASSERT_OK(
      comm.value()->allgather(send.at(), gathered.at(), in.size(), stream.value().get()));
  OBCCL_ASSERT_OK(streamSynchronize(stream.value().get()));
  EXPECT_EQ(download<uint8_t>(recv.at(), in.size()), in);
  EXPECT_EQ(download<uint8_t>(gathered.at(), in.size()), in);
  OBCCL_ASSERT_OK(comm.value()->asyncError());
}

TEST(GpuNccl, RejectsBadRank) {
  if (!ncclAvailable()) GTEST_SKIP() << "obccl was built without NCCL";
  NcclUniqueIdBytes id{};
  Result<std::unique_ptr<NcclComm>> comm = NcclComm::create(2, 2, id, 1000);
  EXPECT_EQ(comm.status().code(), obcclInvalidArgument);
}

}  // namespace
}  // namespace obccl::device
