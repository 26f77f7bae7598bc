#include "multirank/harness.h"

TEST(Smoke, TwoRanksAllReduce) {
  OBCCL_MAKE_WORLD(w, 2, "tcp");
  std::vector<std::vector<float>> v(2, std::vector<float>(10, 1.f));
  auto rcs = obccl_test::runRanks<obcclResult_t>(
      2,
      [&](int r) {
        return obcclAllReduce(v[r].data(), v[r].data(), 10, obcclFloat32, obcclSum, w[r], nullptr);
      },
      &w.comms);
  EXPECT_EQ(rcs[0], obcclSuccess) << obcclGetLastError(w[0]);
  EXPECT_EQ(v[1][9], 2.f);
}
