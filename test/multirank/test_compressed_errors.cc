// Failure behaviour of obcclCompressedAllReduce: a non-finite value on one rank fails the call on
// every rank with obcclInvalidArgument naming that rank, leaves every rank's error buffers bitwise
// unchanged and the communicator usable; argument checks; signed zeros; element order; ranks
// that disagree on compressBlock fail instead of hanging.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "multirank/test_compressed_harness.h"

namespace obccl_test {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

bool bitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// Runs a good call first (so error buffers are not all zero), then plants `bad` with `plant`,
// checks the agreed failure, then checks that the next good call succeeds and equals the exact
// simulation started from the unchanged buffers.
void checkAgreedFailure(int n, int block, size_t count,
                        const std::function<void(CompressedBuffers*)>& plant,
                        const std::string& wantInMessage) {
  World w = makeCompressedWorld(n, kAnyTransport, block, 2048);
  ASSERT_TRUE(w.ok()) << w.error;
  std::mt19937_64 rng(77);
  CompressedBuffers b = makeBuffers(w, obcclFloat32, count);
  fillInputs(&b, rng);
  auto rcs = runCompressed(w, &b, false);
  for (int r = 0; r < n; ++r) ASSERT_EQ(rcs[r], obcclSuccess) << "rank " << r;

  fillInputs(&b, rng);
  OnebitErrors before = b.errors;
  plant(&b);
  OnebitErrors planted = b.errors;
  std::vector<std::string> msgs;
  rcs = runCompressed(w, &b, false, &msgs);
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(rcs[r], obcclInvalidArgument) << "rank " << r << ": " << msgs[r];
    EXPECT_NE(msgs[r].find(wantInMessage), std::string::npos)
        << "rank " << r << "'s message does not name " << wantInMessage << ": " << msgs[r];
    EXPECT_EQ(msgs[r], msgs[0]) << "ranks disagree on the failure";
    EXPECT_TRUE(bitwiseEqual(b.errors.worker[r], planted.worker[r])) << "rank " << r;
    EXPECT_TRUE(bitwiseEqual(b.errors.server[r], planted.server[r])) << "rank " << r;
  }

  // Repair the planted values and go on: the communicator is still usable.
  b.errors = before;
  fillInputs(&b, rng);
  OnebitErrors sim = before;
  OnebitStepResult want =
      onebitStep(onebitLayout(count, n, block), b.x, &sim, OnebitArithmetic::kExact);
  rcs = runCompressed(w, &b, false, &msgs);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(rcs[r], obcclSuccess) << "rank " << r << " after the failure: " << msgs[r];
    EXPECT_TRUE(bitwiseEqual(b.errors.worker[r], sim.worker[r])) << "rank " << r;
  }
  const float* y = reinterpret_cast<const float*>(b.recv[n - 1].data());
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(y[i], want.y[i]) << i;
}

void setInput(CompressedBuffers* b, int rank, size_t i, float v) {
  std::memcpy(&b->send[rank][4 * i], &v, 4);
}

TEST(CompressedErrors, NaNInOneRanksInputFailsEveryRank) {
  checkAgreedFailure(
      3, 0, 1000, [](CompressedBuffers* b) { setInput(b, 1, 700, kNaN); }, "rank(s) 1");
}

// With compressBlock the bad block's scale reaches only the rank owning that chunk; phase 2
// carries the news to everyone.
TEST(CompressedErrors, NaNSeenByOneServerFailsEveryRankWithBlocks) {
  checkAgreedFailure(
      4, 64, 4000, [](CompressedBuffers* b) { setInput(b, 1, 3100, kNaN); }, "rank(s) 1");
}

TEST(CompressedErrors, InfInWorkerErrorOfTwoRanks) {
  checkAgreedFailure(
      4, 0, 4000,
      [](CompressedBuffers* b) {
        b->errors.worker[3][10] = kInf;
        b->errors.worker[1][3999] = -kInf;  // the last valid element
      },
      "rank(s) 1, 3");
}

TEST(CompressedErrors, NaNInThePaddingsErrorFails) {
  // count 1001 on 2 ranks pads to 1008: element 1005 exists only in the worker error.
  checkAgreedFailure(
      2, 0, 1001, [](CompressedBuffers* b) { b->errors.worker[0][1005] = kNaN; }, "rank(s) 0");
}

TEST(CompressedErrors, NaNInServerErrorFails) {
  checkAgreedFailure(
      3, 0, 1000, [](CompressedBuffers* b) { b->errors.server[2][5] = kNaN; },
      "server values on rank(s) 2");
}

TEST(CompressedErrors, ArgumentsAreChecked) {
  World w = makeCompressedWorld(1, kAnyTransport, 0);
  ASSERT_TRUE(w.ok()) << w.error;
  std::vector<float> x(100, 1.0f), y(100), e(104, 0.0f), s(104, 0.0f);
  size_t nw = 0, ns = 0;
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(100, w[0], &nw, &ns), obcclSuccess);
  EXPECT_EQ(nw, 104u);
  EXPECT_EQ(ns, 104u);
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(100, w[0], nullptr, &ns), obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("workerErrorCount"), std::string::npos);
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(100, nullptr, &nw, &ns), obcclInvalidArgument);

  auto call = [&](const void* in, void* out, obcclDataType_t dt, float* we, float* se, size_t n) {
    return obcclCompressedAllReduce(in, out, n, dt, we, se, w[0], nullptr);
  };
  EXPECT_EQ(call(x.data(), y.data(), obcclFloat32, nullptr, s.data(), 100), obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("workerError"), std::string::npos);
  EXPECT_EQ(call(x.data(), y.data(), obcclFloat32, e.data(), nullptr, 100), obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("serverError"), std::string::npos);
  EXPECT_EQ(call(nullptr, y.data(), obcclFloat32, e.data(), s.data(), 100), obcclInvalidArgument);
  EXPECT_EQ(call(x.data(), nullptr, obcclFloat32, e.data(), s.data(), 100), obcclInvalidArgument);
  for (obcclDataType_t dt : {obcclInt32, obcclInt64, obcclUint8, obcclFloat64}) {
    EXPECT_EQ(call(x.data(), y.data(), dt, e.data(), s.data(), 100), obcclInvalidArgument);
    EXPECT_NE(std::string(obcclGetLastError(w[0])).find("datatype"), std::string::npos);
  }
  EXPECT_EQ(call(x.data(), y.data(), static_cast<obcclDataType_t>(42), e.data(), s.data(), 100),
            obcclInvalidArgument);
  // count 0 moves nothing and needs no buffers.
  EXPECT_EQ(call(nullptr, nullptr, obcclFloat32, nullptr, nullptr, 0), obcclSuccess);
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(0, w[0], &nw, &ns), obcclSuccess);
  EXPECT_EQ(nw, 0u);
  EXPECT_EQ(ns, 0u);
  // Nothing above touched the buffers, and a real call still works.
  EXPECT_EQ(call(x.data(), y.data(), obcclFloat32, e.data(), s.data(), 100), obcclSuccess);
  EXPECT_EQ(y[0], static_cast<float>(std::sqrt(100.0 / 104.0)));  // 4 padding zeros in the norm
}

TEST(CompressedErrors, ErrorCountsPadToEightPerRank) {
  World w = makeCompressedWorld(3, kAnyTransport, 0);
  ASSERT_TRUE(w.ok()) << w.error;
  for (size_t count : {1, 24, 25, 1000}) {
    size_t nw = 0, ns = 0;
    ASSERT_EQ(obcclCompressedAllReduceErrorCounts(count, w[1], &nw, &ns), obcclSuccess);
    size_t padded = (count + 23) / 24 * 24;
    EXPECT_EQ(nw, padded) << count;
    EXPECT_EQ(ns, padded / 3) << count;
  }
}

TEST(CompressedErrors, SignedZerosGivePositiveZeroAndOrderIsKept) {
  World w = makeCompressedWorld(2, kAnyTransport, 0);
  ASSERT_TRUE(w.ok()) << w.error;
  CompressedBuffers b = makeBuffers(w, obcclFloat32, 37);
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < 37; ++i) setInput(&b, r, i, (i + r) % 2 ? 0.0f : -0.0f);
  auto rcs = runCompressed(w, &b, false);
  ASSERT_EQ(rcs[0], obcclSuccess);
  for (size_t i = 0; i < 37; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &b.recv[1][4 * i], 4);
    EXPECT_EQ(bits, 0u) << i;  // +0.0: sigma(+-0) = +1 and every scale is 0
  }
  // Signs survive in place, element by element, across byte and chunk boundaries.
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < 37; ++i) setInput(&b, r, i, (i * 7 % 5 < 2) ? -1.0f - i : 1.0f + i);
  rcs = runCompressed(w, &b, true);
  ASSERT_EQ(rcs[1], obcclSuccess);
  for (size_t i = 0; i < 37; ++i) {
    float y;
    std::memcpy(&y, &b.send[0][4 * i], 4);
    EXPECT_EQ(y < 0, i * 7 % 5 < 2) << i;
  }
}

TEST(CompressedErrors, RanksDisagreeingOnTheBlockFailInsteadOfHanging) {
  obcclUniqueId id;
  ASSERT_EQ(obcclGetUniqueId(&id), obcclSuccess);
  std::vector<obcclComm_t> comms(2, nullptr);
  auto rcs = runRanks<obcclResult_t>(2, [&](int r) {
    obcclConfig_t cfg = makeConfig(kAnyTransport, 10000);
    cfg.compressBlock = r == 0 ? 0 : 256;
    return obcclCommInitRankConfig(&comms[r], 2, id, r, &cfg);
  });
  ASSERT_EQ(rcs[0], obcclSuccess);
  ASSERT_EQ(rcs[1], obcclSuccess);
  std::vector<std::vector<float>> x(2, std::vector<float>(4096, 1.0f)), e = x, s = x;
  rcs = runRanks<obcclResult_t>(
      2,
      [&](int r) {
        return obcclCompressedAllReduce(x[r].data(), x[r].data(), 4096, obcclFloat32, e[r].data(),
                                        s[r].data(), comms[r], nullptr);
      },
      &comms);
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(rcs[r], obcclSuccess) << "rank " << r;
    EXPECT_NE(rcs[r], obcclTimeout) << "rank " << r << ": " << obcclGetLastError(comms[r]);
  }
  runRanks<int>(2, [&](int r) { return static_cast<int>(obcclCommDestroy(comms[r])); });
}

}  // namespace
}  // namespace obccl_test
