// C API side of the fault tests: a rank body that runs a loop of allreduces and compressed
// allreduces in a forked process and reports every step to the parent through a shared Arena.
// Header-only: only tests that link libobccl include it (fault_procs.cc goes into every
// multiproc test).
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "multiproc/support/fault_procs.h"
#include "obccl/obccl.h"

namespace obccl_fault {

constexpr int kMaxRanks = 8;

enum Stage : int {
  kNotStarted = 0,
  kStarted,    // waiting for the id and the parent's go
  kIniting,    // inside obcclCommInitRankConfig
  kRunning,    // in the collective loop
  kFailed,     // a call failed; checking what the communicator says afterwards
  kFinished,   // the loop ended without any error
  kDestroyed,  // after obcclCommDestroy (following a failure)
};

// What one rank tells the parent. Written by the rank, read by the parent after the rank ends
// (the atomics also while it runs).
struct RankReport {
  std::atomic<int> stage{kNotStarted};
  std::atomic<int> iters{0};  // collectives completed
  std::atomic<int> inGap{0};  // 1 while sleeping between two calls
  std::atomic<int64_t> initStartNs{0};
  std::atomic<int64_t> callStartNs{0};  // start of the call now running (or the last one)
  int64_t errNs = 0;                    // when the first failing call returned
  int rc = 0;                           // its result
  int asyncRc = -1;                     // obcclCommGetAsyncError afterwards
  int laterRc = -1;                     // one more collective afterwards
  double laterMs = 0;
  int destroyRc = -1;
  double destroyMs = 0;
  int wrong = 0;        // allreduce results that were not the exact sum
  char where[32] = {};  // "init", "allreduce" or "compressed"
  char msg[1024] = {};  // obcclGetLastError of the failing call
  char laterMsg[512] = {};
};

struct Arena {
  std::atomic<int> idReady{0};
  obcclUniqueId id{};
  std::atomic<int> go{0};        // the parent releases every rank at once
  std::atomic<int> stop{0};      // the parent ends the loops (ranks finish their current call)
  std::atomic<int> rootQuit{0};  // the separate root process may exit
  RankReport rank[kMaxRanks];
};

struct LoopOptions {
  const char* transports = "tcp";
  int nranks = 4;
  int timeoutMs = 20000;
  int idRank = 0;           // the rank that calls obcclGetUniqueId; -1: a separate root process
  size_t count = 1024;      // elements per call
  int compressedEvery = 2;  // every k-th call is a compressed allreduce; 0: never
  double gapMs = 0;         // sleep between calls
  int64_t maxRunMs = 20000;
};

inline obcclConfig_t faultConfig(const LoopOptions& o) {
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.transports = o.transports;
  cfg.timeoutMs = o.timeoutMs;
  return cfg;
}

// The separate root process: makes the id, publishes it, and keeps the root service alive
// until the parent lets it go.
inline int rootProcessMain(Arena* a) {
  if (obcclGetUniqueId(&a->id) != obcclSuccess) return 2;
  a->idReady.store(1);
  waitFor([&] { return a->rootQuit.load() != 0; }, 100000);
  return 0;
}

inline void recordFailure(RankReport& me, obcclResult_t rc, const char* where, const char* msg) {
  me.errNs = nowNs();
  me.rc = rc;
  copyText(me.where, sizeof(me.where), where);
  copyText(me.msg, sizeof(me.msg), msg ? msg : "(no message)");
}

// After a failure: what the communicator reports, whether it refuses more work, and destroy.
inline void probeAfterFailure(RankReport& me, obcclComm_t comm, std::vector<float>& buf) {
  me.stage.store(kFailed);
  obcclResult_t async = obcclSuccess;
  if (obcclCommGetAsyncError(comm, &async) == obcclSuccess) me.asyncRc = async;
  int64_t t0 = nowNs();
  me.laterRc =
      obcclAllReduce(buf.data(), buf.data(), buf.size(), obcclFloat32, obcclSum, comm, nullptr);
  me.laterMs = msBetween(t0, nowNs());
  copyText(me.laterMsg, sizeof(me.laterMsg), obcclGetLastError(comm));
  t0 = nowNs();
  me.destroyRc = obcclCommDestroy(comm);
  me.destroyMs = msBetween(t0, nowNs());
  me.stage.store(kDestroyed);
}

// One rank: init, then allreduces (every compressedEvery-th one compressed) until a call fails,
// the parent says stop, or maxRunMs pass. Returns the process exit code (0 unless the harness
// itself broke).
inline int runRank(Arena* a, int rank, const LoopOptions& o) {
  RankReport& me = a->rank[rank];
  me.stage.store(kStarted);
  if (rank == o.idRank) {
    if (obcclGetUniqueId(&a->id) != obcclSuccess) {
      recordFailure(me, obcclSystemError, "getUniqueId", obcclGetLastError(nullptr));
      return 2;
    }
    a->idReady.store(1);
  }
  if (!waitFor([&] { return a->idReady.load() && a->go.load(); }, 30000)) {
    copyText(me.msg, sizeof(me.msg), "harness: no unique id / go within 30 s");
    return 3;
  }
  obcclConfig_t cfg = faultConfig(o);
  obcclComm_t comm = nullptr;
  me.initStartNs.store(nowNs());
  me.stage.store(kIniting);
  obcclResult_t rc = obcclCommInitRankConfig(&comm, o.nranks, a->id, rank, &cfg);
  if (rc != obcclSuccess) {
    recordFailure(me, rc, "init", obcclGetLastError(nullptr));
    me.stage.store(kFailed);
    return 0;
  }
  me.stage.store(kRunning);
  std::vector<float> buf(o.count);
  size_t we = 0, se = 0;
  if (obcclCompressedAllReduceErrorCounts(o.count, comm, &we, &se) != obcclSuccess) return 4;
  std::vector<float> errW(we, 0.f), errS(se, 0.f);
  int64_t start = nowNs();
  bool failed = false;
  for (int i = 0; !a->stop.load() && msBetween(start, nowNs()) < o.maxRunMs; ++i) {
    if (o.gapMs > 0) {
      me.inGap.store(1);
      sleepMs(o.gapMs);
      me.inGap.store(0);
    }
    bool compressed = o.compressedEvery > 0 && i % o.compressedEvery == o.compressedEvery - 1;
    float mine = static_cast<float>((rank + 1) * (i % 7 + 1));
    for (size_t j = 0; j < buf.size(); ++j) buf[j] = mine;
    me.callStartNs.store(nowNs());
    rc = compressed ? obcclCompressedAllReduce(buf.data(), buf.data(), o.count, obcclFloat32,
                                               errW.data(), errS.data(), comm, nullptr)
                    : obcclAllReduce(buf.data(), buf.data(), o.count, obcclFloat32, obcclSum, comm,
                                     nullptr);
    if (rc != obcclSuccess) {
      recordFailure(me, rc, compressed ? "compressed" : "allreduce", obcclGetLastError(comm));
      failed = true;
      break;
    }
    if (!compressed) {
      float want = static_cast<float>((i % 7 + 1) * o.nranks * (o.nranks + 1) / 2);
      for (size_t j = 0; j < buf.size(); ++j)
        if (buf[j] != want) {
          ++me.wrong;
          break;
        }
    }
    me.iters.store(i + 1);
  }
  if (!failed) {
    me.stage.store(kFinished);
    me.destroyRc = obcclCommDestroy(comm);
    return 0;
  }
  probeAfterFailure(me, comm, buf);
  return 0;
}

// Short name of a result code for messages.
inline std::string resultName(int rc) {
  switch (rc) {
    case obcclSuccess:
      return "obcclSuccess";
    case obcclSystemError:
      return "obcclSystemError";
    case obcclInternalError:
      return "obcclInternalError";
    case obcclInvalidArgument:
      return "obcclInvalidArgument";
    case obcclInvalidUsage:
      return "obcclInvalidUsage";
    case obcclRemoteError:
      return "obcclRemoteError";
    case obcclInProgress:
      return "obcclInProgress";
    case obcclTimeout:
      return "obcclTimeout";
    default:
      return "result " + std::to_string(rc);
  }
}

// Whether a 2-rank job can run over `transports` here (UCX may be absent); *why says why not.
inline bool transportUsable(const char* transports, std::string* why) {
  Shared<Arena> a;
  LoopOptions o;
  o.transports = transports;
  o.nranks = 2;
  o.timeoutMs = 15000;
  o.compressedEvery = 0;
  o.maxRunMs = 0;  // init, no collectives
  ProcSet ps;
  for (int r = 0; r < 2; ++r) ps.spawn([&a, r, &o] { return runRank(a.get(), r, o); });
  a->go.store(1);
  std::vector<ChildExit> ex = ps.waitAll(30000);
  for (int r = 0; r < 2; ++r) {
    if (!ex[r].ok()) {
      *why = "rank " + std::to_string(r) + " " + ex[r].describe();
      return false;
    }
    if (a->rank[r].rc != obcclSuccess) {
      *why = std::string(a->rank[r].msg);
      return false;
    }
  }
  return true;
}

}  // namespace obccl_fault
