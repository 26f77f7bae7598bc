// Non-blocking init across processes (config.blocking = 0): obcclCommInitRankConfig returns
// obcclInProgress at once, obcclCommGetAsyncError reports obcclInProgress while a rank is still
// missing (and collectives say so too), then obcclSuccess, and the communicator works. A job
// whose missing rank never comes ends with obcclTimeout through the same polling.
// (test/multirank/test_failures.cc covers the same with ranks as threads.)
#include <gtest/gtest.h>

#include <string>

#include "multiproc/support/fault_comm.h"

namespace obccl_fault {
namespace {

struct NbReport {
  int initRc = -1;
  int inProgressPolls = 0;  // polls that said obcclInProgress
  int finalAsync = -1;
  int earlyCollective = -1;  // a collective while init was still running
  int allreduceRc = -1;
  float value = 0;
  double initMs = 0;
  char msg[512] = {};
};

struct NbArena {
  Arena job;
  std::atomic<int> lateGo{0};  // the last rank starts when the parent says so
  NbReport rank[4];
};

int nonBlockingRank(NbArena* a, int rank, int n, int timeoutMs, bool late) {
  NbReport& me = a->rank[rank];
  if (rank == 0) {
    if (obcclGetUniqueId(&a->job.id) != obcclSuccess) return 2;
    a->job.idReady.store(1);
  }
  if (!waitFor([&] { return a->job.idReady.load() != 0; }, 30000)) return 3;
  if (late && !waitFor([&] { return a->lateGo.load() != 0; }, 30000)) return 4;
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.transports = "tcp";
  cfg.timeoutMs = timeoutMs;
  cfg.blocking = 0;
  obcclComm_t comm = nullptr;
  int64_t t0 = nowNs();
  me.initRc = obcclCommInitRankConfig(&comm, n, a->job.id, rank, &cfg);
  if (me.initRc != obcclInProgress && me.initRc != obcclSuccess) {
    copyText(me.msg, sizeof(me.msg), obcclGetLastError(nullptr));
    return 0;
  }
  float x = static_cast<float>(rank + 1);
  obcclResult_t async = obcclInProgress;
  while (async == obcclInProgress && msBetween(t0, nowNs()) < timeoutMs + 5000) {
    if (obcclCommGetAsyncError(comm, &async) != obcclSuccess) break;
    if (async != obcclInProgress) break;
    if (me.inProgressPolls++ == 0)
      me.earlyCollective = obcclAllReduce(&x, &x, 1, obcclFloat32, obcclSum, comm, nullptr);
    sleepMs(1);
  }
  me.initMs = msBetween(t0, nowNs());
  me.finalAsync = async;
  if (async == obcclSuccess) {
    x = static_cast<float>(rank + 1);
    me.allreduceRc = obcclAllReduce(&x, &x, 1, obcclFloat32, obcclSum, comm, nullptr);
    me.value = x;
  } else {
    copyText(me.msg, sizeof(me.msg), obcclGetLastError(comm));
  }
  obcclCommDestroy(comm);
  return 0;
}

TEST(FaultNonBlocking, InitInProgressThenReadyAcrossProcesses) {
  const int n = 3;
  Shared<NbArena> a;
  ProcSet ps;
  for (int r = 0; r < n; ++r)
    ps.spawn([&, r] { return nonBlockingRank(a.get(), r, n, 20000, r == n - 1); });
  sleepMs(300);  // ranks 0 and 1 poll obcclInProgress meanwhile
  a->lateGo.store(1);
  std::vector<ChildExit> ex = ps.waitAll(40000);
  for (int r = 0; r < n; ++r) {
    const NbReport& m = a->rank[r];
    EXPECT_TRUE(ex[r].ok()) << "rank " << r << " " << ex[r].describe();
    EXPECT_EQ(m.initRc, obcclInProgress) << "rank " << r << ": " << m.msg;
    EXPECT_EQ(m.finalAsync, obcclSuccess) << "rank " << r << ": " << m.msg;
    EXPECT_EQ(m.allreduceRc, obcclSuccess) << "rank " << r;
    EXPECT_EQ(m.value, 6.f) << "rank " << r;
    if (r < n - 1) {
      EXPECT_GT(m.inProgressPolls, 10) << "rank " << r << " saw obcclInProgress too rarely";
      EXPECT_EQ(m.earlyCollective, obcclInProgress) << "rank " << r;
    }
  }
}

TEST(FaultNonBlocking, MissingRankEndsInTimeoutThroughPolling) {
  const int n = 2, timeoutMs = 1000;
  Shared<NbArena> a;
  ProcSet ps;
  ps.spawn([&] { return nonBlockingRank(a.get(), 0, n, timeoutMs, false); });  // rank 1 never comes
  std::vector<ChildExit> ex = ps.waitAll(20000);
  const NbReport& m = a->rank[0];
  EXPECT_TRUE(ex[0].ok()) << ex[0].describe();
  EXPECT_EQ(m.initRc, obcclInProgress);
  EXPECT_EQ(m.finalAsync, obcclTimeout) << m.msg;
  EXPECT_LT(m.initMs, timeoutMs + 1000.0) << m.msg;
  EXPECT_NE(std::string(m.msg).find("rank"), std::string::npos) << m.msg;
}

}  // namespace
}  // namespace obccl_fault
