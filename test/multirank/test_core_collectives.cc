// core::Comm collectives over socketpair connections (no bootstrap): the algorithms, groups,
// mismatch detection and error frames, independent of the public API.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <future>
#include <numeric>
#include <random>
#include <thread>

#include "core/comm.h"
#include "transports/tcp/tcp_transport.h"

namespace obccl::core {
namespace {

using Comms = std::vector<std::unique_ptr<Comm>>;

Comms makeComms(int n, Config cfg = Config()) {
  cfg.transports = {"tcp"};
  std::vector<std::vector<std::unique_ptr<transport::Connection>>> conns(n);
  for (auto& c : conns) c.resize(n);
  for (int i = 0; i < n; ++i) {
    for (int j = i + 1; j < n; ++j) {
      int fds[2];
      EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
      conns[i][j] =
          transport::makeTcpConnection(UniqueFd(fds[0]), "pair to rank " + std::to_string(j));
      conns[j][i] =
          transport::makeTcpConnection(UniqueFd(fds[1]), "pair to rank " + std::to_string(i));
    }
  }
  Comms comms;
  for (int r = 0; r < n; ++r) {
    auto c = Comm::create(r, n, cfg);
    EXPECT_TRUE(c.isOk()) << c.status().message();
    comms.push_back(std::move(c).value());
    EXPECT_TRUE(comms.back()->adoptConnections(0x1234, std::move(conns[r])).isOk());
  }
  return comms;
}

// Runs fn(rank) on one thread per rank; fails the test instead of hanging past the deadline.
template <typename F>
std::vector<Status> runRanks(int n, F fn, int deadlineMs = 30000) {
  std::vector<std::future<Status>> futures;
  for (int r = 0; r < n; ++r) futures.push_back(std::async(std::launch::async, fn, r));
  std::vector<Status> out;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadlineMs);
  for (auto& f : futures) {
    if (f.wait_until(until) != std::future_status::ready) {
      ADD_FAILURE() << "rank thread did not finish within " << deadlineMs << " ms";
      std::abort();  // a hung collective cannot be cancelled; fail loudly instead of hanging
    }
    out.push_back(f.get());
  }
  return out;
}

Config smallSegments() {
  Config cfg;
  cfg.segmentBytes = 4096;  // many segments even for modest counts
  cfg.allreduceSmallBytes = 256;
  cfg.timeoutMs = 20000;
  return cfg;
}

class CoreAllReduce : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(CoreAllReduce, FloatSumMatchesReferenceAndIsIdenticalOnAllRanks) {
  auto [n, count] = GetParam();
  Comms comms = makeComms(n, smallSegments());
  std::vector<std::vector<float>> in(n, std::vector<float>(count)),
      out(n, std::vector<float>(count));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (auto& v : in)
    for (auto& x : v) x = dist(rng);
  auto st = runRanks(n, [&](int r) {
    return comms[r]->allReduce(in[r].data(), out[r].data(), count, obcclFloat32, obcclSum);
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  for (size_t i = 0; i < count; ++i) {
    double ref = 0;
    for (int r = 0; r < n; ++r) ref += in[r][i];
    ASSERT_NEAR(out[0][i], ref, 1e-5 * n) << "element " << i;
  }
  for (int r = 1; r < n; ++r)
    ASSERT_EQ(std::memcmp(out[0].data(), out[r].data(), count * sizeof(float)), 0) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Sizes, CoreAllReduce,
                         ::testing::Combine(::testing::Values(2, 3, 4, 5),
                                            ::testing::Values(size_t{1}, size_t{7}, size_t{63},
                                                              size_t{5000}, size_t{100003})));

TEST(CoreCollectives, InPlaceAvgRingAndReduceScatterAllGather) {
  const int n = 3;
  const size_t count = 30001;
  Comms comms = makeComms(n, smallSegments());
  std::vector<std::vector<double>> buf(n, std::vector<double>(count * n));
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count * n; ++i) buf[r][i] = r + 0.5 * i;
  std::vector<std::vector<double>> rs(n, std::vector<double>(count));
  std::vector<std::vector<double>> ag(n, std::vector<double>(count * n));
  auto st = runRanks(n, [&](int r) -> Status {
    OBCCL_TRY(comms[r]->allReduce(buf[r].data(), buf[r].data(), count * n, obcclFloat64, obcclAvg));
    OBCCL_TRY(comms[r]->reduceScatter(buf[r].data(), rs[r].data(), count, obcclFloat64, obcclMax));
    return comms[r]->allGather(rs[r].data(), ag[r].data(), count, obcclFloat64);
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  for (size_t i = 0; i < count * n; ++i) {
    ASSERT_DOUBLE_EQ(buf[1][i], 1.0 + 0.5 * i) << i;
    ASSERT_DOUBLE_EQ(ag[2][i], 1.0 + 0.5 * i) << i;
  }
}

TEST(CoreCollectives, BroadcastAllToAllBarrier) {
  const int n = 4;
  const size_t count = 20000;
  Comms comms = makeComms(n, smallSegments());
  std::vector<std::vector<int32_t>> b(n, std::vector<int32_t>(count, -1));
  std::iota(b[2].begin(), b[2].end(), 100);
  std::vector<std::vector<int64_t>> a2a(n, std::vector<int64_t>(n * 3));
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < n * 3; ++i) a2a[r][i] = r * 1000 + i;
  auto st = runRanks(n, [&](int r) -> Status {
    OBCCL_TRY(comms[r]->broadcast(b[r].data(), b[r].data(), count, obcclInt32, 2));
    OBCCL_TRY(comms[r]->broadcast(b[r].data(), b[r].data(), 5, obcclInt32, 2));
    OBCCL_TRY(comms[r]->allToAll(a2a[r].data(), a2a[r].data(), 3, obcclInt64));
    return comms[r]->barrier();
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  for (int r = 0; r < n; ++r) {
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(b[r][i], int32_t(100 + i));
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < 3; ++k) ASSERT_EQ(a2a[r][j * 3 + k], j * 1000 + r * 3 + k);
  }
}

TEST(CoreCollectives, GroupsRunIndependently) {
  const int n = 4;
  Comms comms = makeComms(n, smallSegments());
  std::vector<std::vector<float>> v(n, std::vector<float>(1000));
  for (int r = 0; r < n; ++r) std::fill(v[r].begin(), v[r].end(), float(r + 1));
  auto st = runRanks(n, [&](int r) -> Status {
    auto g = comms[r]->makeGroup(r % 2 == 0 ? std::vector<int>{0, 2} : std::vector<int>{3, 1});
    if (!g.isOk()) return g.status();
    return comms[r]->allReduce(v[r].data(), v[r].data(), 1000, obcclFloat32, obcclSum, &g.value());
  });
  for (int r = 0; r < n; ++r) ASSERT_TRUE(st[r].isOk()) << st[r].message();
  EXPECT_EQ(v[0][999], 4.f);
  EXPECT_EQ(v[1][0], 6.f);
}

TEST(CoreCollectives, MismatchFailsEveryRankWithInvalidUsage) {
  const int n = 4;
  Comms comms = makeComms(n, smallSegments());
  std::vector<std::vector<float>> v(n, std::vector<float>(4 * 12));
  auto st = runRanks(n, [&](int r) -> Status {
    if (r == 1) return comms[r]->allGather(v[r].data(), v[r].data(), 10, obcclFloat32);
    return comms[r]->allReduce(v[r].data(), v[r].data(), 12, obcclFloat32, obcclSum);
  });
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(st[r].code(), obcclInvalidUsage) << "rank " << r << ": " << st[r].message();
    EXPECT_FALSE(comms[r]->health().isOk());
  }
}

}  // namespace
}  // namespace obccl::core
