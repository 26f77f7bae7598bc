// Broadcast, allgather, reducescatter, alltoall and barrier through the public API, over
// transports x ranks, in place and out of place, against sequential references.
#include <cstring>

#include "multirank/harness.h"
#include "multirank/reference.h"

namespace obccl_test {
namespace {

using Param = std::tuple<const char*, int>;
const obcclDataType_t kTypes[] = {obcclFloat32, obcclFloat16, obcclBfloat16, obcclFloat64,
                                  obcclInt32,   obcclInt64,   obcclUint8};
const size_t kCounts[] = {0, 1, 7, 1000, 65537};

std::string what(const char* coll, obcclDataType_t dt, size_t count, bool inPlace) {
  return std::string(coll) + " " + typeName(dt) + " count=" + std::to_string(count) +
         (inPlace ? " in place" : " out of place");
}

bool allOk(World& w, const std::vector<obcclResult_t>& rcs, const std::string& label) {
  for (int r = 0; r < w.size(); ++r) {
    if (rcs[r] != obcclSuccess) {
      ADD_FAILURE() << label << ": rank " << r << " returned " << rcs[r] << ": "
                    << obcclGetLastError(w[r]);
      return false;
    }
  }
  return true;
}

// Compares count elements of got with rank `src`'s input (elements offset.. of its sequence).
bool sameAsInput(obcclDataType_t dt, const uint8_t* got, int src, size_t count, size_t offset,
                 uint64_t seed, const std::string& label) {
  std::vector<uint8_t> want(count * typeSize(dt) + 1);
  fillInput(dt, obcclSum, src, count, seed, want.data(), offset);
  if (std::memcmp(got, want.data(), count * typeSize(dt)) == 0) return true;
  ADD_FAILURE() << label << ": data from rank " << src << " differs";
  return false;
}

class Collectives : public ::testing::TestWithParam<Param> {};

TEST_P(Collectives, Broadcast) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  uint64_t seed = 10;
  for (size_t count : kCounts) {
    for (obcclDataType_t dt : kTypes) {
      for (int root : {0, n - 1}) {
        bool inPlace = (count + dt + root) % 2 == 0;
        const size_t bytes = count * typeSize(dt);
        std::vector<std::vector<uint8_t>> send(n), recv(n, std::vector<uint8_t>(bytes + 1, 0xab));
        send[root].resize(bytes + 1);
        fillInput(dt, obcclSum, root, count, ++seed, send[root].data());
        if (inPlace) recv[root] = send[root];
        auto label = what("broadcast", dt, count, inPlace) + " root=" + std::to_string(root);
        auto rcs = runRanks<obcclResult_t>(
            n,
            [&](int r) {
              const void* s = r == root ? (inPlace ? recv[r].data() : send[r].data()) : nullptr;
              return obcclBroadcast(s, recv[r].data(), count, dt, root, w[r], nullptr);
            },
            &w.comms);
        ASSERT_TRUE(allOk(w, rcs, label));
        for (int r = 0; r < n; ++r) {
          ASSERT_TRUE(sameAsInput(dt, recv[r].data(), root, count, 0, seed,
                                  label + " on rank " + std::to_string(r)));
          ASSERT_EQ(recv[r][bytes], inPlace && r == root ? send[root][bytes] : 0xab) << label;
        }
      }
    }
  }
}

TEST_P(Collectives, AllGather) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  uint64_t seed = 20;
  for (size_t count : kCounts) {
    for (obcclDataType_t dt : kTypes) {
      for (bool inPlace : {false, true}) {
        const size_t bytes = count * typeSize(dt);
        std::vector<std::vector<uint8_t>> send(n, std::vector<uint8_t>(bytes + 1));
        std::vector<std::vector<uint8_t>> recv(n, std::vector<uint8_t>(n * bytes + 1, 0xab));
        ++seed;
        for (int r = 0; r < n; ++r) {
          fillInput(dt, obcclSum, r, count, seed, send[r].data());
          if (inPlace) std::memcpy(recv[r].data() + r * bytes, send[r].data(), bytes);
        }
        auto label = what("allgather", dt, count, inPlace);
        auto rcs = runRanks<obcclResult_t>(
            n,
            [&](int r) {
              const void* s = inPlace ? recv[r].data() + r * bytes : send[r].data();
              return obcclAllGather(s, recv[r].data(), count, dt, w[r], nullptr);
            },
            &w.comms);
        ASSERT_TRUE(allOk(w, rcs, label));
        for (int r = 0; r < n; ++r) {
          for (int src = 0; src < n; ++src)
            ASSERT_TRUE(sameAsInput(dt, recv[r].data() + src * bytes, src, count, 0, seed, label));
          ASSERT_EQ(recv[r][n * bytes], 0xab) << label << ": wrote past recvbuff";
        }
      }
    }
  }
}

TEST_P(Collectives, ReduceScatter) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  uint64_t seed = 30;
  for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{20001}}) {
    for (obcclDataType_t dt : kTypes) {
      for (int op = 0; op < obcclNumOps; ++op) {
        if (op == obcclAvg && !isFloat(dt)) continue;
        bool inPlace = (count + dt + op) % 2 == 0;
        const size_t es = typeSize(dt), bytes = count * es;
        std::vector<std::vector<uint8_t>> send(n, std::vector<uint8_t>(n * bytes + 1));
        std::vector<std::vector<uint8_t>> recv(n, std::vector<uint8_t>(bytes + 1, 0xab));
        ++seed;
        for (int r = 0; r < n; ++r)
          fillInput(dt, static_cast<obcclRedOp_t>(op), r, n * count, seed, send[r].data());
        auto label =
            what("reducescatter", dt, count, inPlace) + " " + opName(static_cast<obcclRedOp_t>(op));
        auto rcs = runRanks<obcclResult_t>(
            n,
            [&](int r) {
              void* out = inPlace ? send[r].data() + r * bytes : recv[r].data();
              return obcclReduceScatter(send[r].data(), out, count, dt,
                                        static_cast<obcclRedOp_t>(op), w[r], nullptr);
            },
            &w.comms);
        ASSERT_TRUE(allOk(w, rcs, label));
        for (int r = 0; r < n; ++r) {
          const uint8_t* got = inPlace ? send[r].data() + r * bytes : recv[r].data();
          for (size_t i = 0; i < count; ++i) {
            Expected e = reduceReference(dt, static_cast<obcclRedOp_t>(op), n, r * count + i, seed);
            double v = loadValue(dt, got, i);
            ASSERT_LE(std::fabs(v - e.value), e.tolerance)
                << label << ": rank " << r << " element " << i << " is " << v << ", expected "
                << e.value;
          }
          if (!inPlace) {
            ASSERT_EQ(recv[r][bytes], 0xab) << label << ": wrote past recvbuff";
          }
        }
      }
    }
  }
}

TEST_P(Collectives, AllToAll) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  uint64_t seed = 40;
  for (size_t count : kCounts) {
    for (obcclDataType_t dt : kTypes) {
      bool inPlace = (count + dt) % 2 == 0;
      const size_t bytes = count * typeSize(dt);
      std::vector<std::vector<uint8_t>> send(n, std::vector<uint8_t>(n * bytes + 1));
      std::vector<std::vector<uint8_t>> recv(n, std::vector<uint8_t>(n * bytes + 1, 0xab));
      ++seed;
      for (int r = 0; r < n; ++r) fillInput(dt, obcclSum, r, n * count, seed, send[r].data());
      auto label = what("alltoall", dt, count, inPlace);
      auto rcs = runRanks<obcclResult_t>(
          n,
          [&](int r) {
            void* out = inPlace ? send[r].data() : recv[r].data();
            return obcclAlltoAll(send[r].data(), out, count, dt, w[r], nullptr);
          },
          &w.comms);
      ASSERT_TRUE(allOk(w, rcs, label));
      for (int r = 0; r < n; ++r) {
        const uint8_t* got = inPlace ? send[r].data() : recv[r].data();
        // Block j of rank r's result is block r of rank j's input.
        for (int j = 0; j < n; ++j)
          ASSERT_TRUE(sameAsInput(dt, got + j * bytes, j, count, r * count, seed, label));
      }
    }
  }
}

TEST_P(Collectives, BarrierAndStats) {
  auto [transport, n] = GetParam();
  OBCCL_MAKE_WORLD(w, n, transport);
  auto rcs = runRanks<obcclResult_t>(
      n,
      [&](int r) -> obcclResult_t {
        for (int i = 0; i < 20; ++i) {
          obcclResult_t rc = obcclBarrier(w[r]);
          if (rc != obcclSuccess) return rc;
        }
        return obcclSuccess;
      },
      &w.comms);
  ASSERT_TRUE(allOk(w, rcs, "barrier"));
  for (int r = 0; r < n; ++r) {
    obcclCommStats_t st;
    st.size = sizeof(st);
    ASSERT_EQ(obcclCommGetStats(w[r], &st), obcclSuccess);
    EXPECT_EQ(st.collectives, 20u);
    if (n > 1) {
      // A barrier frame is a bare 64-byte header; each rank sends ceil(log2 n) per barrier.
      int rounds = 0;
      for (int d = 1; d < n; d <<= 1) ++rounds;
      EXPECT_EQ(st.bytesSent, 20u * rounds * 64u);
      EXPECT_EQ(st.bytesReceived, 20u * rounds * 64u);
    }
  }
}

std::string paramName(const ::testing::TestParamInfo<Param>& info) {
  return std::string(std::get<0>(info.param)) + "_" + std::to_string(std::get<1>(info.param)) +
         "ranks";
}

INSTANTIATE_TEST_SUITE_P(Transports, Collectives,
                         ::testing::Combine(::testing::Values("tcp", "shm", "ucx"),
                                            ::testing::Values(1, 2, 3, 4, 5, 8)),
                         paramName);

}  // namespace
}  // namespace obccl_test
