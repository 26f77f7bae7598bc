// The hierarchical compressed allreduce against its reference composition (per host the fp32
// average of each shard, then the section-4 exact simulation across hosts, then gathered),
// bit for bit, over several calls carrying error buffers; the error counts; and which schedule
// hierarchical = -1 / 0 / 1 picks for a layout. Hosts are pretended with OBCCL_TOPO_FILE.
#include <gtest/gtest.h>

#include <random>

#include "multirank/test_hier_harness.h"

namespace obccl_test {
namespace {

constexpr size_t kSmallSegment = 256;  // bytes: several frames in every phase

std::string describe(const HostLayout& l, obcclDataType_t dt, size_t count, bool inPlace,
                     int call) {
  return l.name + " " + floatTypeName(dt) + " count " + std::to_string(count) +
         (inPlace ? " in place" : "") + " call " + std::to_string(call);
}

// Runs `calls` calls on the world; after each, every rank's output must equal the reference
// bit for bit (so all ranks agree), and every rank's error buffers the reference's.
void checkSequence(World& w, const HostLayout& layout, size_t block, obcclDataType_t dt,
                   size_t count, bool inPlace, int calls, std::mt19937_64& rng) {
  const int n = w.size();
  HierReference ref(layout, count, block);
  CompressedBuffers b = makeBuffers(w, dt, count);
  ASSERT_EQ(b.errors.worker[0].size(), ref.shard()) << layout.name;
  ASSERT_EQ(b.errors.server[0].size(), ref.chunk()) << layout.name;
  for (int call = 0; call < calls; ++call) {
    const std::string what = describe(layout, dt, count, inPlace, call);
    fillInputs(&b, rng, call == 0 ? 1.0f : 0.01f);  // the scale changes: the errors matter
    std::vector<float> want = ref.step(b.x);
    std::vector<std::string> msgs;
    auto rcs = runCompressed(w, &b, inPlace, &msgs);
    ASSERT_EQ(firstFailure(rcs, msgs), "") << what;
    for (int r = 0; r < n; ++r) {
      const std::vector<uint8_t>& out = outputOf(b, r, inPlace);
      for (size_t i = 0; i < count; ++i)
        ASSERT_EQ(storedBitsAt(out, i, dt), onebitEncode(want[i], dt))
            << what << ": rank " << r << " element " << i;
      long d = firstBitDifference(b.errors.worker[r], ref.worker(r));
      ASSERT_EQ(d, -1) << what << ": rank " << r << " worker error element " << d;
      d = firstBitDifference(b.errors.server[r], ref.server(r));
      ASSERT_EQ(d, -1) << what << ": rank " << r << " server error element " << d;
    }
  }
}

struct LayoutCase {
  HostLayout layout;
  int hierarchical;  // -1 for multi-host layouts (auto must pick it); 1 on one host
};

std::ostream& operator<<(std::ostream& os, const LayoutCase& c) { return os << c.layout.name; }

class HierReferenceTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(HierReferenceTest, MatchesTheCompositionBitForBit) {
  const LayoutCase& c = GetParam();
  std::mt19937_64 rng(0x41e7 + c.layout.nranks());
  {
    HierOptions o;
    o.hierarchical = c.hierarchical;
    o.segmentBytes = kSmallSegment;
    World w = makeHierWorld(c.layout, o);
    ASSERT_TRUE(w.ok()) << w.error;
    bool inPlace = false;
    for (obcclDataType_t dt : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
      for (size_t count : {size_t{1}, size_t{37}, size_t{1000}}) {
        checkSequence(w, c.layout, 0, dt, count, inPlace, 3, rng);
        if (HasFatalFailure()) return;
        inPlace = !inPlace;
      }
    }
  }
  HierOptions o;
  o.hierarchical = c.hierarchical;
  o.block = 16;
  o.segmentBytes = kSmallSegment;  // the packed allgather spans several frames too
  World w = makeHierWorld(c.layout, o);
  ASSERT_TRUE(w.ok()) << w.error;
  checkSequence(w, c.layout, 16, obcclFloat32, 4099, true, 2, rng);
  if (HasFatalFailure()) return;
  checkSequence(w, c.layout, 16, obcclBfloat16, 1000, false, 2, rng);
}

INSTANTIATE_TEST_SUITE_P(Layouts, HierReferenceTest,
                         ::testing::Values(LayoutCase{{"2x2", {0, 0, 1, 1}}, -1},
                                           LayoutCase{{"2x2_interleaved", {0, 1, 0, 1}}, -1},
                                           LayoutCase{{"2x3", {0, 0, 0, 1, 1, 1}}, -1},
                                           LayoutCase{{"3x2_shuffled", {2, 0, 1, 2, 0, 1}}, -1},
                                           LayoutCase{{"1x3_forced", {0, 0, 0}}, 1},
                                           LayoutCase{{"1x4_forced", {0, 0, 0, 0}}, 1}),
                         [](const ::testing::TestParamInfo<LayoutCase>& info) {
                           return info.param.layout.name;
                         });

// A large call, one frame per segment of the default size: the buffers are decoded in place
// (float32, no padding in the shard) and the intra-host frames are large.
TEST(HierCompressed, LargeCallMatchesTheComposition) {
  HostLayout layout{"2x2", {0, 0, 1, 1}};
  World w = makeHierWorld(layout, HierOptions());
  ASSERT_TRUE(w.ok()) << w.error;
  std::mt19937_64 rng(7);
  checkSequence(w, layout, 0, obcclFloat32, (size_t{1} << 20) + 64, false, 2, rng);
}

// Np = N rounded up to 8n; S = Np / L; c = S / H.
TEST(HierCompressed, ErrorCountsDescribeTheShard) {
  struct Case {
    HostLayout layout;
    int hierarchical;
    size_t count, worker, server;
  };
  const std::vector<Case> cases = {
      {{"2x2", {0, 0, 1, 1}}, -1, 1000, 512, 256},
      {{"2x2", {0, 0, 1, 1}}, 0, 1000, 1024, 256},
      {{"3x2", {0, 0, 1, 1, 2, 2}}, 1, 1000, 504, 168},
      {{"2x3", {0, 0, 0, 1, 1, 1}}, -1, 1, 16, 8},
      {{"2x2", {0, 0, 1, 1}}, -1, 0, 0, 0},
  };
  for (const Case& c : cases) {
    HierOptions o;
    o.hierarchical = c.hierarchical;
    World w = makeHierWorld(c.layout, o);
    ASSERT_TRUE(w.ok()) << w.error;
    for (int r = 0; r < w.size(); ++r) {
      size_t worker = 1, server = 1;
      ASSERT_EQ(obcclCompressedAllReduceErrorCounts(c.count, w[r], &worker, &server), obcclSuccess)
          << obcclGetLastError(w[r]);
      EXPECT_EQ(worker, c.worker) << c.layout.name << " hierarchical " << c.hierarchical;
      EXPECT_EQ(server, c.server) << c.layout.name << " hierarchical " << c.hierarchical;
    }
  }
}

// hierarchical = 0 on two hosts runs section 4 over all ranks, bit for bit.
TEST(HierCompressed, OffRunsTheFlatSchedule) {
  HostLayout layout{"2x2", {0, 0, 1, 1}};
  HierOptions o;
  o.hierarchical = 0;
  World w = makeHierWorld(layout, o);
  ASSERT_TRUE(w.ok()) << w.error;
  const size_t count = 999;
  OnebitLayout flat = onebitLayout(count, 4, 0);
  OnebitErrors sim = OnebitErrors::zero(flat);
  CompressedBuffers b = makeBuffers(w, obcclFloat32, count);
  ASSERT_EQ(b.errors.worker[0].size(), flat.padded);
  std::mt19937_64 rng(11);
  for (int call = 0; call < 2; ++call) {
    fillInputs(&b, rng);
    OnebitStepResult want = onebitStep(flat, b.x, &sim, OnebitArithmetic::kExact);
    std::vector<std::string> msgs;
    auto rcs = runCompressed(w, &b, false, &msgs);
    ASSERT_EQ(firstFailure(rcs, msgs), "");
    for (int r = 0; r < 4; ++r) {
      for (size_t i = 0; i < count; ++i)
        ASSERT_EQ(storedBitsAt(b.recv[r], i, obcclFloat32), onebitEncode(want.y[i], obcclFloat32))
            << "rank " << r << " element " << i;
      EXPECT_EQ(firstBitDifference(b.errors.worker[r], sim.worker[r]), -1) << "rank " << r;
    }
  }
}

// Which schedule runs, seen through the worker error count for N = 1000 (flat: Np).
TEST(HierCompressed, AutoPicksTheHierarchyOnlyWhereItHelps) {
  struct Case {
    HostLayout layout;
    bool useTopo;
    int hierarchical;
    size_t worker;
  };
  const std::vector<Case> cases = {
      {{"2x2 auto", {0, 0, 1, 1}}, true, -1, 512},         // 2 hosts, 2 ranks each: on
      {{"one host auto", {0, 0, 0, 0}}, false, -1, 1024},  // detected: one host, off
      {{"one host forced", {0, 0, 0, 0}}, false, 1, 256},  // S = Np / 4, H = 1
      {{"4x1 auto", {0, 1, 2, 3}}, true, -1, 1024},        // one rank per host: flat
      {{"4x1 forced", {0, 1, 2, 3}}, true, 1, 1024},       // the same schedule: flat
      {{"3+1 auto", {0, 0, 0, 1}}, true, -1, 1024},        // uneven: flat
      {{"2x2 off", {0, 1, 1, 0}}, true, 0, 1024},          // off
  };
  for (const Case& c : cases) {
    HierOptions o;
    o.hierarchical = c.hierarchical;
    o.useTopo = c.useTopo;
    World w = makeHierWorld(c.layout, o);
    ASSERT_TRUE(w.ok()) << c.layout.name << ": " << w.error;
    size_t worker = 0, server = 0;
    ASSERT_EQ(obcclCompressedAllReduceErrorCounts(1000, w[0], &worker, &server), obcclSuccess)
        << c.layout.name << ": " << obcclGetLastError(w[0]);
    EXPECT_EQ(worker, c.worker) << c.layout.name;
  }
}

}  // namespace
}  // namespace obccl_test
