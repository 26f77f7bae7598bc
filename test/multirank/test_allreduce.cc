// obcclAllReduce through the public API: transports x ranks x counts x datatypes x ops, in place
// and out of place, against a sequential reference, with bitwise identical results on all ranks.
#include <cstring>

#include "multirank/harness.h"
#include "multirank/reference.h"

namespace obccl_test {
namespace {

using Param = std::tuple<const char*, int>;

// Runs one allreduce on every rank and checks it; returns false after the first failure.
bool checkAllReduce(World& w, obcclDataType_t dt, obcclRedOp_t op, size_t count, bool inPlace,
                    uint64_t seed) {
  const int n = w.size();
  const size_t es = typeSize(dt);
  std::vector<std::vector<uint8_t>> send(n, std::vector<uint8_t>(count * es + 1));
  std::vector<std::vector<uint8_t>> recv(n, std::vector<uint8_t>(count * es + 1, 0xcd));
  for (int r = 0; r < n; ++r) fillInput(dt, op, r, count, seed, send[r].data());
  auto rcs = runRanks<obcclResult_t>(
      n,
      [&](int r) {
        void* out = inPlace ? send[r].data() : recv[r].data();
        return obcclAllReduce(send[r].data(), out, count, dt, op, w[r], nullptr);
      },
      &w.comms);
  std::string what = std::string(typeName(dt)) + " " + opName(op) +
                     " count=" + std::to_string(count) + (inPlace ? " in place" : " out of place");
  for (int r = 0; r < n; ++r) {
    if (rcs[r] != obcclSuccess) {
      ADD_FAILURE() << what << ": rank " << r << " returned " << rcs[r] << ": "
                    << obcclGetLastError(w[r]);
      return false;
    }
  }
  auto& out = inPlace ? send : recv;
  for (int r = 0; r < n; ++r) {
    if (out[r][count * es] != (inPlace ? send[r][count * es] : 0xcd)) {
      ADD_FAILURE() << what << ": rank " << r << " wrote past the end of recvbuff";
      return false;
    }
    if (r > 0 && std::memcmp(out[0].data(), out[r].data(), count * es) != 0) {
      ADD_FAILURE() << what << ": rank " << r << "'s result differs bitwise from rank 0's";
      return false;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    Expected e = reduceReference(dt, op, n, i, seed);
    double got = loadValue(dt, out[0].data(), i);
    if (!(std::fabs(got - e.value) <= e.tolerance)) {
      ADD_FAILURE() << what << ": element " << i << " is " << got << ", expected " << e.value
                    << " +- " << e.tolerance;
      return false;
    }
  }
  return true;
}

class AllReduce : public ::testing::TestWithParam<Param> {};

TEST_P(AllReduce, MatchesReferenceForEveryTypeOpAndCount) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  const obcclDataType_t types[] = {obcclFloat32, obcclFloat16, obcclBfloat16, obcclFloat64,
                                   obcclInt32,   obcclInt64,   obcclUint8};
  const size_t counts[] = {0, 1, 7, 1000, 65537};
  uint64_t seed = 1;
  for (size_t count : counts) {
    for (obcclDataType_t dt : types) {
      for (int op = 0; op < obcclNumOps; ++op) {
        if (op == obcclAvg && !isFloat(dt)) continue;
        for (bool inPlace : {false, true}) {
          // The largest count runs out of place only for half the combinations (2 cores).
          if (count == 65537 && !inPlace && (op + dt) % 2 == 1) continue;
          ASSERT_TRUE(checkAllReduce(w, dt, static_cast<obcclRedOp_t>(op), count, inPlace, ++seed));
        }
      }
    }
  }
}

TEST_P(AllReduce, LargeCountForAFewCombinations) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  const size_t count = (size_t{4} << 20) + 3;
  ASSERT_TRUE(checkAllReduce(w, obcclFloat32, obcclSum, count, false, 101));
  ASSERT_TRUE(checkAllReduce(w, obcclBfloat16, obcclAvg, count, true, 102));
  if (n <= 4) {
    ASSERT_TRUE(checkAllReduce(w, obcclInt32, obcclMax, count, true, 103));
  }
}

std::string paramName(const ::testing::TestParamInfo<Param>& info) {
  return std::string(std::get<0>(info.param)) + "_" + std::to_string(std::get<1>(info.param)) +
         "ranks";
}

INSTANTIATE_TEST_SUITE_P(Transports, AllReduce,
                         ::testing::Combine(::testing::Values("tcp", "shm", "ucx"),
                                            ::testing::Values(1, 2, 3, 4, 5, 8)),
                         paramName);

}  // namespace
}  // namespace obccl_test
