// Mismatched calls and corrupted payloads between forked ranks, over every transport.
//
// Mismatch matrix: after a few matching calls, one seeded rank calls a different collective, a
// different count, datatype, reduction op or root, or an uncompressed allreduce where the others
// call the compressed one. Every rank must fail with obcclInvalidUsage, with a message that
// carries the mismatched call's sequence number and both calls' parameters: at that call, or
// (a rank that needed nothing from the ranks involved completes it) at a later one, by a final
// check call at the latest. The exception is a broadcast whose ranks disagree on the root
// where no frame of the other tree reaches a rank that reads it (e.g. the real root takes
// another rank for the root: nobody sends): then every rank ends with obcclTimeout instead.
// OBCCL_FAULT_MISMATCH_SEEDS sets the seeded cases per transport (default 12).
//
// Corruption: OBCCL_TEST_CORRUPT_RX=N (test-only parameter) flips one bit of every N-th payload
// one rank receives, after the transport and before the checksum check. Compressed payloads
// always carry CRC32C, so the call must fail and no rank may ever report a wrong result
// (checked against a clean run); uncompressed payloads are checked only with OBCCL_CHECKSUM=1.
// OBCCL_FAULT_CORRUPT_SEEDS sets the corrupted jobs per transport (default 10).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "multiproc/support/fault_comm.h"

namespace obccl_fault {
namespace {

constexpr int kMaxOps = 24;

enum class Coll { kAllReduce, kBroadcast, kAllGather, kReduceScatter, kAlltoAll, kCompressed };

struct OpSpec {
  Coll coll = Coll::kAllReduce;
  size_t count = 1000;
  obcclDataType_t dtype = obcclFloat32;
  obcclRedOp_t op = obcclSum;
  int root = 0;
};

size_t elemSize(obcclDataType_t t) {
  switch (t) {
    case obcclFloat64:
    case obcclInt64:
      return 8;
    case obcclFloat16:
    case obcclBfloat16:
      return 2;
    case obcclUint8:
      return 1;
    default:
      return 4;
  }
}

// What every rank runs: ops[i], except that rank `deviant` runs `deviation` at index `at`.
struct JobPlan {
  const char* transport = "tcp";
  int nranks = 3;
  std::vector<OpSpec> ops;
  int deviant = -1;
  int at = -1;
  OpSpec deviation;
  int corruptRank = -1;  // sets OBCCL_TEST_CORRUPT_RX=corruptEvery on this rank
  int corruptEvery = 0;
  bool checksum = false;  // OBCCL_CHECKSUM=1 on every rank
  int timeoutMs = 20000;
};

struct OpResult {
  int rc = -1;  // -1: not run
  uint64_t hash = 0;
};

struct MismatchArena {
  Arena job;
  OpResult results[kMaxRanks][kMaxOps];
  char msg[kMaxRanks][1024];
  int failedAt[kMaxRanks];
};

uint64_t fnv(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

// Small integers, exact in every datatype; float inputs for the compressed allreduce.
void fillInput(std::vector<uint8_t>& buf, const OpSpec& o, int rank, int index) {
  size_t n = buf.size() / elemSize(o.dtype);
  for (size_t i = 0; i < n; ++i) {
    int v = static_cast<int>((rank * 7 + index * 3 + i) % 11) + 1;
    switch (o.dtype) {
      case obcclFloat32:
        reinterpret_cast<float*>(buf.data())[i] = v * 0.25f - 1.f;
        break;
      case obcclFloat64:
        reinterpret_cast<double*>(buf.data())[i] = v;
        break;
      case obcclInt32:
        reinterpret_cast<int32_t*>(buf.data())[i] = v;
        break;
      case obcclInt64:
        reinterpret_cast<int64_t*>(buf.data())[i] = v;
        break;
      default:
        buf[i] = static_cast<uint8_t>(v);
        break;
    }
  }
}

obcclResult_t runOp(const OpSpec& o, obcclComm_t comm, int rank, int n, int index,
                    std::vector<float>* ew, std::vector<float>* es, uint64_t* hash) {
  size_t es_ = elemSize(o.dtype);
  std::vector<uint8_t> in(o.count * es_ * n), out(o.count * es_ * n);
  fillInput(in, o, rank, index);
  obcclResult_t rc = obcclInternalError;
  size_t outBytes = o.count * es_;
  switch (o.coll) {
    case Coll::kAllReduce:
      rc = obcclAllReduce(in.data(), out.data(), o.count, o.dtype, o.op, comm, nullptr);
      break;
    case Coll::kBroadcast:
      rc = obcclBroadcast(in.data(), out.data(), o.count, o.dtype, o.root, comm, nullptr);
      break;
    case Coll::kAllGather:
      rc = obcclAllGather(in.data(), out.data(), o.count, o.dtype, comm, nullptr);
      outBytes *= n;
      break;
    case Coll::kReduceScatter:
      rc = obcclReduceScatter(in.data(), out.data(), o.count, o.dtype, o.op, comm, nullptr);
      break;
    case Coll::kAlltoAll:
      rc = obcclAlltoAll(in.data(), out.data(), o.count, o.dtype, comm, nullptr);
      outBytes *= n;
      break;
    case Coll::kCompressed: {
      size_t we = 0, se = 0;
      if (ew->empty() &&
          obcclCompressedAllReduceErrorCounts(o.count, comm, &we, &se) == obcclSuccess) {
        ew->assign(we, 0.f);
        es->assign(se, 0.f);
      }
      rc = obcclCompressedAllReduce(in.data(), out.data(), o.count, obcclFloat32, ew->data(),
                                    es->data(), comm, nullptr);
      break;
    }
  }
  *hash = fnv(out.data(), outBytes);
  return rc;
}

int mismatchRank(MismatchArena* a, const JobPlan& p, int rank) {
  if (p.checksum) setenv("OBCCL_CHECKSUM", "1", 1);
  if (rank == p.corruptRank)
    setenv("OBCCL_TEST_CORRUPT_RX", std::to_string(p.corruptEvery).c_str(), 1);
  if (rank == 0) {
    if (obcclGetUniqueId(&a->job.id) != obcclSuccess) return 2;
    a->job.idReady.store(1);
  }
  if (!waitFor([&] { return a->job.idReady.load() != 0; }, 30000)) return 3;
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.transports = p.transport;
  cfg.timeoutMs = p.timeoutMs;
  obcclComm_t comm = nullptr;
  if (obcclCommInitRankConfig(&comm, p.nranks, a->job.id, rank, &cfg) != obcclSuccess) {
    copyText(a->msg[rank], sizeof(a->msg[rank]), obcclGetLastError(nullptr));
    return 4;
  }
  a->failedAt[rank] = -1;
  std::vector<float> ew, es;
  for (int i = 0; i < static_cast<int>(p.ops.size()); ++i) {
    const OpSpec& o = rank == p.deviant && i == p.at ? p.deviation : p.ops[i];
    OpResult& r = a->results[rank][i];
    r.rc = runOp(o, comm, rank, p.nranks, i, &ew, &es, &r.hash);
    if (r.rc != obcclSuccess) {
      a->failedAt[rank] = i;
      copyText(a->msg[rank], sizeof(a->msg[rank]), obcclGetLastError(comm));
      break;
    }
  }
  obcclCommDestroy(comm);
  return 0;
}

// Runs the job in forked ranks; false (with *why) when a rank crashed or hung.
bool runJob(const JobPlan& p, MismatchArena* a, std::string* why) {
  ProcSet ps;
  for (int r = 0; r < p.nranks; ++r) ps.spawn([a, &p, r] { return mismatchRank(a, p, r); });
  a->job.go.store(1);
  std::vector<ChildExit> ex = ps.waitAll(60000);
  for (int r = 0; r < p.nranks; ++r)
    if (!ex[r].ok()) {
      *why = "rank " + std::to_string(r) + " " + ex[r].describe() + ": " + a->msg[r];
      return false;
    }
  return true;
}

std::string collName(Coll c) {
  static const char* kNames[] = {"allreduce",     "broadcast", "allgather",
                                 "reducescatter", "alltoall",  "compressed"};
  return kNames[static_cast<int>(c)];
}

// A case of the matrix: kind k (0..5) at a random position with random parameters.
JobPlan mismatchPlan(const char* transport, int kind, std::mt19937& rng) {
  JobPlan p;
  p.transport = transport;
  p.nranks = 3 + static_cast<int>(rng() % 2);
  static const size_t kCounts[] = {1, 17, 1000, 40000};
  int len = 2 + static_cast<int>(rng() % 5);
  for (int i = 0; i < len; ++i) {
    OpSpec o;
    o.coll = static_cast<Coll>(rng() % 6);
    o.count = kCounts[rng() % 4];
    o.dtype = o.coll == Coll::kCompressed ? obcclFloat32 : (rng() % 2 ? obcclFloat32 : obcclInt32);
    o.op = rng() % 2 ? obcclSum : obcclMax;
    o.root = static_cast<int>(rng() % p.nranks);
    p.ops.push_back(o);
  }
  p.at = static_cast<int>(rng() % len);
  p.deviant = static_cast<int>(rng() % p.nranks);
  OpSpec& base = p.ops[p.at];
  OpSpec d = base;
  switch (kind) {
    case 0:  // another collective
      d.coll = static_cast<Coll>((static_cast<int>(base.coll) + 1 + rng() % 5) % 6);
      if (d.coll == Coll::kCompressed) d.dtype = obcclFloat32;
      break;
    case 1:  // another count (never 0: that call would be a no-op on the deviant)
      d.count = base.count + 1 + rng() % 50;
      if (rng() % 2 && base.count > 8) d.count = base.count / 2;
      break;
    case 2:  // another datatype
      if (base.coll == Coll::kCompressed) {
        d.coll = Coll::kAllReduce;  // the compressed one takes float32 only here
        d.dtype = obcclInt32;
      } else {
        d.dtype = base.dtype == obcclFloat32 ? obcclInt32 : obcclFloat32;
      }
      break;
    case 3:  // another reduction
      base.coll = rng() % 2 ? Coll::kAllReduce : Coll::kReduceScatter;
      d = base;
      d.op = base.op == obcclSum ? obcclMax : obcclSum;
      break;
    case 4:  // another root
      base.coll = Coll::kBroadcast;
      d = base;
      d.root = (base.root + 1) % p.nranks;
      break;
    default:  // uncompressed where the others compress
      base.coll = Coll::kCompressed;
      base.dtype = obcclFloat32;
      d = base;
      d.coll = Coll::kAllReduce;
      d.op = obcclAvg;
      break;
  }
  p.deviation = d;
  // A rank whose mismatched call needed nothing from the deviant completes it; it must fail at
  // the next call at the latest.
  OpSpec check;
  check.count = 8;
  p.ops.push_back(check);
  p.timeoutMs = 3000;
  return p;
}

// A broadcast whose ranks disagree on the root. When no frame of the other tree ever reaches a
// rank that reads it (the real root takes another rank for the root, so nobody sends; or the
// deviant waits for a parent that is a leaf in the real tree), only the timeout can end it, as
// in NCCL; detecting every case would cost each broadcast an extra message.
bool rootMismatch(const JobPlan& p) {
  const OpSpec& b = p.ops[p.at];
  return b.coll == Coll::kBroadcast && p.deviation.coll == Coll::kBroadcast &&
         p.deviation.root != b.root;
}

std::string planText(const JobPlan& p) {
  const OpSpec& b = p.ops[p.at];
  const OpSpec& d = p.deviation;
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "%s, %d ranks, call #%d: rank %d runs %s(count=%zu, type %d, op %d, root %d) "
                "instead of %s(count=%zu, type %d, op %d, root %d)",
                p.transport, p.nranks, p.at + 1, p.deviant, collName(d.coll).c_str(), d.count,
                d.dtype, d.op, d.root, collName(b.coll).c_str(), b.count, b.dtype, b.op, b.root);
  return buf;
}

class FaultMismatch : public ::testing::TestWithParam<const char*> {};

TEST_P(FaultMismatch, EveryRankFailsWithInvalidUsageNamingBothCalls) {
  const char* transport = GetParam();
  std::string why;
  if (!transportUsable(transport, &why)) GTEST_SKIP() << transport << " unusable: " << why;
  int seeds = envInt("OBCCL_FAULT_MISMATCH_SEEDS", 12);
  std::mt19937 rng(envInt("OBCCL_FAULT_SEED", 99) + std::string(transport).size());
  int detected = 0, timeouts = 0;
  for (int s = 0; s < seeds; ++s) {
    JobPlan p = mismatchPlan(transport, s % 6, rng);
    Shared<MismatchArena> a;
    if (!runJob(p, a.get(), &why)) {
      ADD_FAILURE() << planText(p) << ": " << why;
      continue;
    }
    bool all = true;
    bool rootCase = rootMismatch(p);
    bool byTimeout = rootCase;
    for (int r = 0; r < p.nranks; ++r)
      byTimeout =
          byTimeout && a->failedAt[r] >= 0 && a->results[r][a->failedAt[r]].rc == obcclTimeout;
    for (int r = 0; r < p.nranks; ++r) {
      std::string msg = a->msg[r];
      std::string seq = "#" + std::to_string(p.at + 1);
      int at = a->failedAt[r];
      // Fails at the mismatched call, or (when it needed nothing from the ranks involved) at a
      // later one, by the final check call at the latest.
      bool ok = at >= p.at;
      if (byTimeout) {
        ok = ok && a->results[r][at].rc == obcclTimeout;  // every rank, at its deadline
      } else {
        ok = ok && msg.find(seq) != std::string::npos;
        ok = ok && at >= 0 && a->results[r][at].rc == obcclInvalidUsage &&
             msg.find("this rank") != std::string::npos;
      }
      for (int i = 0; i < p.at; ++i) ok = ok && a->results[r][i].rc == obcclSuccess;
      if (!ok)
        ADD_FAILURE() << planText(p) << ": rank " << r << " failed at call #" << at + 1 << " with "
                      << resultName(at >= 0 ? a->results[r][at].rc : 0) << ": " << msg;
      all = all && ok;
    }
    timeouts += all && byTimeout;
    detected += all;
    std::printf("FAULT_MISMATCH %s detected=%s | rank %d: %s\n", planText(p).c_str(),
                all ? "yes" : "NO", p.deviant == 0 ? 1 : 0, a->msg[p.deviant == 0 ? 1 : 0]);
  }
  std::printf(
      "FAULT_MISMATCH_SUMMARY transport=%s seeded=%d detected_on_every_rank=%d (by "
      "obcclInvalidUsage: %d, broadcast root mismatches by obcclTimeout: %d)\n",
      transport, seeds, detected, detected - timeouts, timeouts);
  EXPECT_EQ(detected, seeds);
}

// ---- Corruption --------------------------------------------------------------------------------

// A job of `calls` identical-shape collectives, clean or with one rank corrupting its receives.
JobPlan corruptionPlan(const char* transport, bool compressed, int nranks, int calls,
                       size_t count) {
  JobPlan p;
  p.transport = transport;
  p.nranks = nranks;
  for (int i = 0; i < calls; ++i) {
    OpSpec o;
    o.coll = compressed ? Coll::kCompressed : Coll::kAllReduce;
    o.count = count;
    p.ops.push_back(o);
  }
  return p;
}

struct CorruptionOutcome {
  int wrong = 0;          // successful calls whose output differs from the clean run
  bool failed = false;    // some rank's call failed
  bool crcNamed = false;  // some rank's message is the checksum failure
};

CorruptionOutcome compareWithClean(const JobPlan& p, const MismatchArena& clean,
                                   const MismatchArena& bad) {
  CorruptionOutcome o;
  for (int r = 0; r < p.nranks; ++r) {
    for (int i = 0; i < static_cast<int>(p.ops.size()); ++i) {
      const OpResult& x = bad.results[r][i];
      if (x.rc == -1) break;
      if (x.rc != obcclSuccess) {
        o.failed = true;
        break;
      }
      o.wrong += x.hash != clean.results[r][i].hash;
    }
    o.crcNamed = o.crcNamed || std::string(bad.msg[r]).find("CRC32C") != std::string::npos;
  }
  return o;
}

class FaultCorruption : public ::testing::TestWithParam<const char*> {};

TEST_P(FaultCorruption, CompressedPayloadCorruptionIsAlwaysAnError) {
  const char* transport = GetParam();
  std::string why;
  if (!transportUsable(transport, &why)) GTEST_SKIP() << transport << " unusable: " << why;
  int seeds = envInt("OBCCL_FAULT_CORRUPT_SEEDS", 10);
  std::mt19937 rng(envInt("OBCCL_FAULT_SEED", 5) + std::string(transport).size());
  const int calls = 8;
  int detected = 0;
  for (int s = 0; s < seeds; ++s) {
    static const size_t kCounts[] = {64, 5000, 300000};
    JobPlan p =
        corruptionPlan(transport, true, 2 + static_cast<int>(rng() % 3), calls, kCounts[rng() % 3]);
    Shared<MismatchArena> clean, bad;
    ASSERT_TRUE(runJob(p, clean.get(), &why)) << why;
    for (int r = 0; r < p.nranks; ++r) ASSERT_EQ(clean->failedAt[r], -1) << clean->msg[r];
    p.corruptRank = static_cast<int>(rng() % p.nranks);
    p.corruptEvery = 1 + static_cast<int>(rng() % (2 * (p.nranks - 1) * calls / 2));
    ASSERT_TRUE(runJob(p, bad.get(), &why)) << why;
    CorruptionOutcome o = compareWithClean(p, *clean, *bad);
    std::printf(
        "FAULT_CORRUPT transport=%s ranks=%d count=%zu corrupt_rank=%d every=%d "
        "failed=%d crc_named=%d wrong_results=%d | %s\n",
        transport, p.nranks, p.ops[0].count, p.corruptRank, p.corruptEvery, o.failed, o.crcNamed,
        o.wrong, bad->msg[p.corruptRank]);
    EXPECT_EQ(o.wrong, 0) << "a corrupted payload produced a wrong result";
    EXPECT_TRUE(o.failed && o.crcNamed) << "corruption went unnoticed";
    detected += o.failed && o.crcNamed && o.wrong == 0;
  }
  std::printf("FAULT_CORRUPT_SUMMARY transport=%s corrupted_jobs=%d detected=%d\n", transport,
              seeds, detected);
}

// OBCCL_CHECKSUM is what protects uncompressed payloads: with it a corruption is an error,
// without it the same corruption is a silently wrong result.
TEST_P(FaultCorruption, ChecksumParameterGuardsUncompressedPayloads) {
  const char* transport = GetParam();
  std::string why;
  if (!transportUsable(transport, &why)) GTEST_SKIP() << transport << " unusable: " << why;
  JobPlan p = corruptionPlan(transport, false, 3, 6, 20000);
  Shared<MismatchArena> clean, on, off;
  ASSERT_TRUE(runJob(p, clean.get(), &why)) << why;
  p.corruptRank = 1;
  p.corruptEvery = 3;
  p.checksum = true;
  ASSERT_TRUE(runJob(p, on.get(), &why)) << why;
  CorruptionOutcome withSum = compareWithClean(p, *clean, *on);
  EXPECT_TRUE(withSum.failed && withSum.crcNamed) << on->msg[1];
  EXPECT_EQ(withSum.wrong, 0);
  p.checksum = false;
  ASSERT_TRUE(runJob(p, off.get(), &why)) << why;
  CorruptionOutcome without = compareWithClean(p, *clean, *off);
  EXPECT_FALSE(without.failed) << off->msg[1];
  EXPECT_GT(without.wrong, 0) << "the test hook corrupted nothing";
  std::printf(
      "FAULT_CHECKSUM transport=%s with OBCCL_CHECKSUM=1: failed=%d wrong=%d; without: "
      "failed=%d wrong=%d\n",
      transport, withSum.failed, withSum.wrong, without.failed, without.wrong);
}

INSTANTIATE_TEST_SUITE_P(Transports, FaultMismatch, ::testing::Values("tcp", "shm", "ucx"));
INSTANTIATE_TEST_SUITE_P(Transports, FaultCorruption, ::testing::Values("tcp", "shm", "ucx"));

}  // namespace
}  // namespace obccl_fault
