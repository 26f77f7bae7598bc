// obcclCommAbort from another thread: it returns within 1 s from any state (init waiting for a
// missing rank, a collective waiting for a peer, idle, after a failure), the pending call returns
// within 1 s too, and afterwards the process holds no more fds, threads or shared-memory
// mappings than before the communicator existed, and can make a new communicator.
//
// Every scenario runs in a fresh forked process (so /proc/self counts only its own state); the
// peers and the bootstrap root live in other forked processes. Abort and destroy of one handle
// concurrently is not tested: both free the handle, so that is a use-after-free by contract (as
// in NCCL).
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "multiproc/support/fault_comm.h"

namespace obccl_fault {
namespace {

constexpr double kAbortLimitMs = 1000;

// What the process under test owns besides its communicators.
struct Hygiene {
  int fds = 0;
  int threads = 0;
  int shmMaps = 0;   // mappings of /dev/shm/obccl-* in this process
  int shmNames = 0;  // /dev/shm/obccl-* names created by this process
  bool operator==(const Hygiene& o) const {
    return fds == o.fds && threads == o.threads && shmMaps == o.shmMaps && shmNames == o.shmNames;
  }
  std::string text() const {
    return "fds " + std::to_string(fds) + ", threads " + std::to_string(threads) +
           ", shm mappings " + std::to_string(shmMaps) + ", shm names " + std::to_string(shmNames);
  }
};

Hygiene snapshot() {
  Hygiene h;
  h.fds = countOpenFds();
  h.threads = countThreads();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) h.shmMaps += line.find("/dev/shm/obccl") != std::string::npos;
  std::string mine = "-" + std::to_string(getpid()) + "-";
  for (const std::string& n : shmSegments("obccl-"))
    h.shmNames += n.find(mine) != std::string::npos;
  return h;
}

// Waits until the process is back to `base` (the bootstrap root and transports may need a moment
// to notice that everyone left); describes the difference otherwise.
std::string settleTo(const Hygiene& base, int64_t ms) {
  Hygiene now;
  if (waitFor([&] { return (now = snapshot()) == base; }, ms)) return "";
  return "before: " + base.text() + "; after: " + now.text() + "; open fds: " + describeOpenFds();
}

// What the process under test reports.
struct AbortReport {
  std::atomic<int> ready{0};   // its communicator is up (the peer may stop participating)
  std::atomic<int> peerGo{0};  // the peer may destroy its first communicator
  std::atomic<int> idReady2{0};
  obcclUniqueId id2{};  // a second job, made after the abort
  double abortMs = -1;  // obcclCommAbort's duration
  double pendingMs = -1;
  int pendingRc = -1;
  int secondRc = -1;  // allreduce on the communicator made after the abort
  char failure[2048] = {};
};

struct AbortArena {
  Arena job;  // id and the peer's report
  AbortReport tested;
};

int fail(AbortReport& r, const std::string& what) {
  copyText(r.failure, sizeof(r.failure), what);
  return 1;
}

obcclConfig_t config(const char* transports, int blocking = 1, int timeoutMs = 20000) {
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.transports = transports;
  cfg.timeoutMs = timeoutMs;
  cfg.blocking = blocking;
  return cfg;
}

// After the abort: a second 2-rank job with the peer, whose id this process makes (so it hosts
// a root again), and one allreduce on it.
int secondJob(AbortArena* a, const char* transports) {
  AbortReport& r = a->tested;
  if (obcclGetUniqueId(&r.id2) != obcclSuccess)
    return fail(r, "second id: " + std::string(obcclGetLastError(nullptr)));
  r.idReady2.store(1);
  obcclConfig_t cfg = config(transports);
  obcclComm_t c = nullptr;
  if (obcclCommInitRankConfig(&c, 2, r.id2, 0, &cfg) != obcclSuccess)
    return fail(r, "second init: " + std::string(obcclGetLastError(nullptr)));
  float x = 1;
  r.secondRc = obcclAllReduce(&x, &x, 1, obcclFloat32, obcclSum, c, nullptr);
  if (r.secondRc != obcclSuccess || x != 3.f)
    return fail(r, "second allreduce gave " + resultName(r.secondRc) + ", value " +
                       std::to_string(x) + ": " + obcclGetLastError(c));
  obcclCommDestroy(c);
  return 0;
}

// The peer: joins the first job as rank 1 and never calls a collective on it (so rank 0's call
// waits), then joins the second job and contributes 2.
int peerMain(AbortArena* a, const char* transports, bool joinFirst) {
  if (joinFirst) {
    if (!waitFor([&] { return a->job.idReady.load() != 0; }, 20000)) return 2;
    obcclConfig_t cfg = config(transports);
    obcclComm_t c = nullptr;
    if (obcclCommInitRankConfig(&c, 2, a->job.id, 1, &cfg) != obcclSuccess) return 3;
    waitFor([&] { return a->tested.peerGo.load() != 0; }, 30000);
    obcclCommDestroy(c);
  }
  if (!waitFor([&] { return a->tested.idReady2.load() != 0; }, 30000)) return 4;
  obcclConfig_t cfg = config(transports);
  obcclComm_t c = nullptr;
  if (obcclCommInitRankConfig(&c, 2, a->tested.id2, 1, &cfg) != obcclSuccess) return 5;
  float x = 2;
  obcclResult_t rc = obcclAllReduce(&x, &x, 1, obcclFloat32, obcclSum, c, nullptr);
  obcclCommDestroy(c);
  return rc == obcclSuccess ? 0 : 6;
}

// Aborts `comm` from this thread while `pending` (if any) runs on another; checks both times.
int abortWithPending(AbortArena* a, obcclComm_t comm,
                     const std::function<obcclResult_t()>& pending) {
  AbortReport& r = a->tested;
  std::atomic<int64_t> pendingEnd{0};
  std::thread t;
  if (pending) {
    t = std::thread([&] {
      r.pendingRc = pending();
      pendingEnd.store(nowNs());
    });
    sleepMs(200);  // well inside the call (it waits for a peer that never comes)
    if (pendingEnd.load() != 0) {
      t.join();
      return fail(r, "the pending call returned before the abort: " + resultName(r.pendingRc));
    }
  }
  int64_t t0 = nowNs();
  obcclResult_t rc = obcclCommAbort(comm);
  r.abortMs = msBetween(t0, nowNs());
  if (pending) {
    waitFor([&] { return pendingEnd.load() != 0; }, 5000);
    if (pendingEnd.load() == 0) {
      std::fprintf(stderr, "the pending call is still blocked 5 s after obcclCommAbort\n");
      _exit(7);
    }
    t.join();
    r.pendingMs = msBetween(t0, pendingEnd.load());
  }
  if (rc != obcclSuccess) return fail(r, "obcclCommAbort gave " + resultName(rc));
  return 0;
}

enum class Scenario { kPendingCollective, kIdle, kInitWaitingForMissingRank };

// The process under test (rank 0).
int testedMain(AbortArena* a, const char* transports, Scenario scenario) {
  AbortReport& r = a->tested;
  Hygiene base = snapshot();
  if (!waitFor([&] { return a->job.idReady.load() != 0; }, 20000)) return fail(r, "no id");
  obcclComm_t comm = nullptr;
  int rc = 0;
  if (scenario == Scenario::kInitWaitingForMissingRank) {
    obcclConfig_t cfg = config(transports, /*blocking=*/0);
    obcclResult_t init =
        obcclCommInitRankConfig(&comm, 3, a->job.id, 0, &cfg);  // rank 2 never comes
    if (init != obcclInProgress) return fail(r, "non-blocking init gave " + resultName(init));
    sleepMs(200);
    obcclResult_t async = obcclSuccess;
    if (obcclCommGetAsyncError(comm, &async) != obcclSuccess || async != obcclInProgress)
      return fail(r, "init no longer in progress: " + resultName(async));
    rc = abortWithPending(a, comm, nullptr);
  } else {
    obcclConfig_t cfg = config(transports);
    if (obcclCommInitRankConfig(&comm, 2, a->job.id, 0, &cfg) != obcclSuccess)
      return fail(r, std::string("init: ") + obcclGetLastError(nullptr));
    std::vector<float> v(100000, 1.f);
    std::function<obcclResult_t()> pending;
    if (scenario == Scenario::kPendingCollective)
      pending = [&] {
        return obcclAllReduce(v.data(), v.data(), v.size(), obcclFloat32, obcclSum, comm, nullptr);
      };
    rc = abortWithPending(a, comm, pending);
  }
  r.peerGo.store(1);
  if (rc != 0) return rc;
  std::string leak = settleTo(base, 3000);
  if (!leak.empty()) return fail(r, "after the abort: " + leak);
  return secondJob(a, transports);
}

struct AbortCase {
  const char* transport;
  Scenario scenario;
  const char* name;
};

class FaultAbort : public ::testing::TestWithParam<AbortCase> {};

TEST_P(FaultAbort, ReturnsQuicklyUnblocksAndLeavesNothingBehind) {
  const AbortCase& c = GetParam();
  std::string why;
  if (!transportUsable(c.transport, &why)) GTEST_SKIP() << c.transport << " unusable: " << why;
  Shared<AbortArena> a;
  ProcSet ps;
  ps.spawn([&] { return rootProcessMain(&a->job); });
  bool peerJoins = c.scenario != Scenario::kInitWaitingForMissingRank;
  int tested = ps.spawn([&] { return testedMain(a.get(), c.transport, c.scenario); });
  int peer = ps.spawn([&] { return peerMain(a.get(), c.transport, peerJoins); });
  ChildExit te, pe;
  bool testedEnded = ps.waitOne(tested, 30000, &te);
  bool peerEnded = ps.waitOne(peer, 10000, &pe);
  a->job.rootQuit.store(1);
  ps.waitAll(5000);
  const AbortReport& r = a->tested;
  std::printf("FAULT_ABORT transport=%s scenario=%s abort_ms=%.1f pending_ms=%.1f pending_rc=%s\n",
              c.transport, c.name, r.abortMs, r.pendingMs, resultName(r.pendingRc).c_str());
  ASSERT_TRUE(testedEnded) << "the process under test hung";
  EXPECT_TRUE(te.ok()) << te.describe() << ": " << r.failure;
  EXPECT_TRUE(peerEnded && pe.ok()) << "peer: " << pe.describe();
  EXPECT_GE(r.abortMs, 0);
  EXPECT_LT(r.abortMs, kAbortLimitMs);
  if (c.scenario == Scenario::kPendingCollective) {
    EXPECT_NE(r.pendingRc, obcclSuccess);
    EXPECT_LT(r.pendingMs, kAbortLimitMs);
  }
  EXPECT_EQ(r.secondRc, obcclSuccess) << r.failure;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, FaultAbort,
    ::testing::Values(AbortCase{"tcp", Scenario::kPendingCollective, "pending"},
                      AbortCase{"shm", Scenario::kPendingCollective, "pending"},
                      AbortCase{"ucx", Scenario::kPendingCollective, "pending"},
                      AbortCase{"tcp", Scenario::kIdle, "idle"},
                      AbortCase{"shm", Scenario::kIdle, "idle"},
                      AbortCase{"tcp", Scenario::kInitWaitingForMissingRank, "init"}),
    [](const ::testing::TestParamInfo<AbortCase>& info) {
      return std::string(info.param.transport) + "_" + info.param.name;
    });

// ---- Stress: init, collectives and aborts at random points, all ranks in one process ----------

// A rank of the stress, shared between its thread and the aborter. Abort frees the handle, so
// another thread may abort only while no new call can start on it: the aborter aborts a rank
// itself only when that rank has been inside one call for a while (it is blocked in the library),
// and otherwise asks the rank to abort its own communicator at its next step.
struct StressRank {
  std::mutex mu;
  bool stop = false;       // no new call may start; set before any abort
  bool abortSelf = false;  // the rank aborts its own communicator when it sees stop
  bool inCall = false;     // inside exactly one API call, started at callStartNs
  int64_t callStartNs = 0;
  obcclComm_t comm = nullptr;  // published once init returned
  bool aborted = false;
  double abortMs = -1;  // duration of the obcclCommAbort that ended it
  int64_t endNs = 0;
};

// One API call of the rank's loop; *calls counts the collectives issued.
obcclResult_t stressStep(obcclComm_t comm, bool* ready, int* calls, std::vector<float>& v,
                         std::vector<float>& ew, std::vector<float>& es) {
  if (!*ready) {
    obcclResult_t async = obcclSuccess;
    obcclResult_t rc = obcclCommGetAsyncError(comm, &async);
    if (rc != obcclSuccess) return rc;
    if (async == obcclInProgress) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      return obcclSuccess;
    }
    *ready = async == obcclSuccess;
    return async;
  }
  if (ew.empty()) {
    size_t we = 0, se = 0;
    obcclResult_t rc = obcclCompressedAllReduceErrorCounts(v.size(), comm, &we, &se);
    ew.assign(we, 0.f);
    es.assign(se, 0.f);
    return rc;
  }
  if ((*calls)++ % 3 == 2)
    return obcclCompressedAllReduce(v.data(), v.data(), v.size(), obcclFloat32, ew.data(),
                                    es.data(), comm, nullptr);
  return obcclAllReduce(v.data(), v.data(), v.size(), obcclFloat32, obcclMax, comm, nullptr);
}

// One rank's thread: blocking or non-blocking init, then collectives until stopped or a call
// fails; it then aborts its communicator (when asked) or destroys it (unless it was aborted).
void stressRank(StressRank* s, int rank, int n, const obcclUniqueId& id, const char* transports,
                size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  obcclConfig_t cfg = config(transports, /*blocking=*/rng() % 2, /*timeoutMs=*/5000);
  obcclComm_t comm = nullptr;
  obcclResult_t rc = obcclCommInitRankConfig(&comm, n, id, rank, &cfg);
  bool ready = rc == obcclSuccess;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    if (rc == obcclSuccess || rc == obcclInProgress) s->comm = comm;
  }
  std::vector<float> v(count, 1.f), ew, es;
  int calls = 0;
  bool failed = rc != obcclSuccess && rc != obcclInProgress;
  while (!failed) {
    {
      std::lock_guard<std::mutex> lock(s->mu);
      if (s->stop) break;
      s->inCall = true;
      s->callStartNs = nowNs();
    }
    rc = stressStep(comm, &ready, &calls, v, ew, es);
    std::lock_guard<std::mutex> lock(s->mu);
    s->inCall = false;
    failed = rc != obcclSuccess;
  }
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->comm != nullptr && !s->aborted) {
    s->stop = true;  // the aborter leaves it alone from now on
    if (s->abortSelf) {
      int64_t t0 = nowNs();
      obcclCommAbort(s->comm);
      s->abortMs = msBetween(t0, nowNs());
      s->aborted = true;
    } else {
      obcclCommDestroy(s->comm);
    }
    s->comm = nullptr;
  }
  s->endNs = nowNs();
}

// Aborts rank s: from this thread when it is blocked inside a call, else by asking it to.
// Returns the abort's duration in ms when this thread did it, -1 otherwise.
double abortRank(StressRank& s) {
  constexpr int64_t kBlockedNs = 50 * 1000000LL;
  obcclComm_t c = nullptr;
  waitFor(
      [&] {
        std::lock_guard<std::mutex> lock(s.mu);
        if (s.stop || s.endNs != 0) return true;
        if (s.comm != nullptr && s.inCall && nowNs() - s.callStartNs > kBlockedNs) {
          s.stop = true;
          s.aborted = true;
          c = s.comm;
          s.comm = nullptr;
          return true;
        }
        return false;
      },
      200);
  if (c == nullptr) {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.stop) {
      s.stop = true;
      s.abortSelf = true;
    }
    return -1;
  }
  int64_t t0 = nowNs();
  obcclCommAbort(c);
  return msBetween(t0, nowNs());
}

// One iteration in this process: n ranks on threads, a random subset aborted at a random moment.
std::string stressIteration(int n, const char* transports, std::mt19937& rng, int* crossThread) {
  obcclUniqueId id;
  if (obcclGetUniqueId(&id) != obcclSuccess)
    return std::string("id: ") + obcclGetLastError(nullptr);
  std::vector<StressRank> ranks(n);
  std::vector<std::thread> threads;
  size_t count = 1 + rng() % 200000;
  for (int r = 0; r < n; ++r)
    threads.emplace_back(stressRank, &ranks[r], r, n, std::cref(id), transports, count, rng());
  sleepMs(std::uniform_real_distribution<double>(0, 60)(rng));
  int victims = 1 + static_cast<int>(rng() % n);
  int first = static_cast<int>(rng() % n);
  std::string problem;
  for (int k = 0; k < victims; ++k) {
    double ms = abortRank(ranks[(first + k) % n]);
    if (ms >= 0) ++*crossThread;
    if (ms > kAbortLimitMs) problem += "abort took " + std::to_string(ms) + " ms; ";
  }
  for (int r = 0; r < n; ++r) {
    if (!waitFor(
            [&] {
              std::lock_guard<std::mutex> lock(ranks[r].mu);
              return ranks[r].endNs != 0;
            },
            8000)) {
      std::fprintf(stderr, "stress: rank %d still running 8 s after the aborts\n", r);
      _exit(9);
    }
    threads[r].join();
    if (ranks[r].abortMs > kAbortLimitMs)
      problem += "self-abort took " + std::to_string(ranks[r].abortMs) + " ms; ";
  }
  return problem;
}

TEST(FaultAbortStress, InitCollectivesAndAbortsAtRandomPoints) {
  int iterations = envInt("OBCCL_FAULT_ABORT_ITERATIONS", 25);
  for (const char* transports : {"tcp", "shm", "ucx"}) {
    std::string why;
    if (!transportUsable(transports, &why)) {
      std::printf("FAULT_ABORT_STRESS transports=%s skipped: %s\n", transports, why.c_str());
      continue;
    }
    Shared<AbortReport> r;
    ProcSet ps;
    ps.spawn(
        [&, transports] {
          std::mt19937 rng(envInt("OBCCL_FAULT_SEED", 7) + std::string(transports).size());
          Hygiene base = snapshot();
          std::string problems;
          int crossThread = 0;
          for (int i = 0; i < iterations; ++i) {
            std::string p =
                stressIteration(2 + static_cast<int>(rng() % 3), transports, rng, &crossThread);
            if (!p.empty()) problems += "iteration " + std::to_string(i) + ": " + p;
          }
          std::printf(
              "FAULT_ABORT_STRESS transports=%s aborts of blocked calls from another "
              "thread: %d\n",
              transports, crossThread);
          std::string leak = settleTo(base, 5000);
          if (!leak.empty()) problems += "after all iterations: " + leak;
          if (problems.empty()) return 0;
          return fail(*r, problems);
        },
        600);
    ChildExit e;
    ASSERT_TRUE(ps.waitOne(0, 300000, &e)) << transports << ": stress hung";
    EXPECT_TRUE(e.ok()) << transports << ": " << e.describe() << ": " << r->failure;
    std::printf("FAULT_ABORT_STRESS transports=%s iterations=%d result=%s\n", transports,
                iterations, e.ok() ? "ok" : r->failure);
  }
}

}  // namespace
}  // namespace obccl_fault
