// Hostile connections against a running job: garbage, early closes, replayed handshake bytes
// (captured from a real rank's handshake on the loopback device) and stalled connections hit
// the bootstrap root while the ranks join and while they run allreduces, and the tcp data
// listeners whenever they are up. The job must complete with correct results, every hostile
// connection must be closed by the server without getting past the handshake, the root's memory
// must stay bounded, listeners must bind the chosen interface (not the wildcard), none may stay
// open after init, and the job secret must not appear in TRACE logs.
//
// OBCCL_FAULT_HOSTILE_CONNECTIONS sets the total (default 1000; perf/fault_hostile.sh: 10000).
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "multiproc/support/fault_comm.h"
#include "multiproc/support/hostile.h"

namespace obccl_fault {
namespace {

constexpr int kRanks = 3;

// Set in the last rank's process: its tcp data connects wait this long first, so that the lower
// ranks' data listeners stay up (and under attack) for a while. 0 elsewhere.
int gDataConnectDelayMs = 0;
int gRootPort = 0;
constexpr int kKinds = static_cast<int>(HostileKind::kCount);
// A handshake transcript from a client: hello (48), proof (32), join header + payload (32).
constexpr size_t kTranscriptBytes = 112;

struct HostileArena {
  std::atomic<int> goRoot{0};    // rank 0 starts (and with it the root)
  std::atomic<int> goOthers{0};  // the other ranks start
  std::atomic<int> stop{0};
  std::atomic<int> iters[kRanks];
  int wrong[kRanks];
  int rc[kRanks];
  char msg[kRanks][512];
  pid_t pids[kRanks];
  std::atomic<int> attackerGo{0};
  std::atomic<int> initFlooding{0};  // the first phase has made some connections
  std::atomic<int> attackerDone{0};
  HostileTally initTally[kKinds];
  HostileTally steadyTally[kKinds];
  HostileTally dataTally[kKinds];
  int dataListenersSeen = 0;
  int dataHits = 0;  // connections aimed at a data listener (some find it closed already)
  int captured = 0;
  char note[1024];
  long rssBeforeKb = 0, rssPeakKb = 0, rssAfterKb = 0;
  char listeners[1024];        // what listened after init, "addr:port" list
  char listenersDuring[1024];  // data listeners seen during init
};

struct Job {
  std::string host;
  int port = 0;
  std::string secret;
  std::string logDir;
  int connections = 1000;
};

int rankMain(HostileArena* a, const Job& job, int rank) {
  setenv("OBCCL_RANK", std::to_string(rank).c_str(), 1);
  setenv("OBCCL_WORLD_SIZE", std::to_string(kRanks).c_str(), 1);
  setenv("OBCCL_ROOT", (job.host + ":" + std::to_string(job.port)).c_str(), 1);
  setenv("OBCCL_SECRET", job.secret.c_str(), 1);
  setenv("OBCCL_TRANSPORTS", "tcp", 1);
  setenv("OBCCL_TIMEOUT_MS", "60000", 1);
  setenv("OBCCL_DEBUG", "TRACE", 1);
  setenv("OBCCL_DEBUG_FILE", (job.logDir + "/rank" + std::to_string(rank) + ".%p.log").c_str(), 1);
  gRootPort = job.port;
  if (rank == kRanks - 1) gDataConnectDelayMs = 1500;
  std::atomic<int>& go = rank == 0 ? a->goRoot : a->goOthers;
  if (!waitFor([&] { return go.load() != 0; }, 60000)) return 2;
  obcclComm_t comm = nullptr;
  a->rc[rank] = obcclCommInitFromEnv(&comm, nullptr);
  if (a->rc[rank] != obcclSuccess) {
    copyText(a->msg[rank], sizeof(a->msg[rank]), obcclGetLastError(nullptr));
    return 3;
  }
  std::vector<float> v(4096);
  for (int i = 0;; ++i) {
    // Every rank leaves at the same call: a max-allreduce of the stop flag every 16 calls.
    if (i % 16 == 15) {
      int32_t stop = a->stop.load();
      if (obcclAllReduce(&stop, &stop, 1, obcclInt32, obcclMax, comm, nullptr) != obcclSuccess) {
        a->rc[rank] = obcclRemoteError;
        copyText(a->msg[rank], sizeof(a->msg[rank]), obcclGetLastError(comm));
        break;
      }
      if (stop) break;
    }
    for (float& x : v) x = static_cast<float>((rank + 1) * (i % 5 + 1));
    obcclResult_t rc =
        obcclAllReduce(v.data(), v.data(), v.size(), obcclFloat32, obcclSum, comm, nullptr);
    if (rc != obcclSuccess) {
      a->rc[rank] = rc;
      copyText(a->msg[rank], sizeof(a->msg[rank]), obcclGetLastError(comm));
      break;
    }
    float want = static_cast<float>((i % 5 + 1) * kRanks * (kRanks + 1) / 2);
    for (float x : v) a->wrong[rank] += x != want;
    a->iters[rank].store(i + 1);
  }
  obcclCommDestroy(comm);
  return a->rc[rank] == obcclSuccess ? 0 : 4;
}

std::vector<pid_t> rankPids(const HostileArena* a) {
  return std::vector<pid_t>(a->pids, a->pids + kRanks);
}

std::string describe(const std::vector<ListenSocket>& ls) {
  std::string out;
  for (const auto& l : ls)
    out += (out.empty() ? "" : ", ") + l.address + ":" + std::to_string(l.port);
  return out;
}

void store(const std::vector<HostileTally>& from, HostileTally* to) {
  for (int k = 0; k < kKinds; ++k) to[k].add(from[k]);
}

// Phase 1: while rank 0 waits for the others and they join and connect: garbage, early closes
// and stalls at the root, and at every data listener that shows up.
int floodDuringInit(HostileArena* a, const Job& job, LoopbackSniffer* sniffer, bool sniffing,
                    std::vector<int>* ownPorts) {
  std::vector<ListenSocket> data;
  int turn = 0, made = 0;
  HostileOptions o;
  o.host = job.host;
  o.port = job.port;
  o.connections = 1 << 30;  // until the job runs and half the budget is spent
  o.kinds = {HostileKind::kGarbage, HostileKind::kEarlyClose, HostileKind::kStalled};
  o.ownPorts = ownPorts;
  o.pickPort = [&] {
    if (++made == 100) a->initFlooding.store(1);  // the ranks join from now on
    if (data.empty() || ++turn % 2 == 0) return job.port;
    ++a->dataHits;
    return data[turn / 2 % data.size()].port;
  };
  std::vector<int> seen;
  o.onRound = [&] {
    if (sniffing) sniffer->pump();
    data.clear();  // only listeners that are up now (they close once their peers are in)
    for (const ListenSocket& l : listeningSockets(rankPids(a))) {
      if (l.port == job.port) continue;
      data.push_back(l);
      if (std::find(seen.begin(), seen.end(), l.port) != seen.end()) continue;
      seen.push_back(l.port);
      std::string all = std::string(a->listenersDuring) + (a->listenersDuring[0] ? ", " : "") +
                        l.address + ":" + std::to_string(l.port);
      copyText(a->listenersDuring, sizeof(a->listenersDuring), all);
      ++a->dataListenersSeen;
    }
    bool running = true;
    for (int r = 0; r < kRanks; ++r) running = running && a->iters[r].load() > 0;
    return !(running && made >= job.connections / 2);
  };
  std::vector<HostileTally> t = runHostileFlood(o);
  a->initFlooding.store(1);
  store(t, a->initTally);
  return made;
}

// Phase 2: the job runs; every kind, replay included, at the root; memory sampled throughout.
void floodSteadyState(HostileArena* a, const Job& job, const std::vector<uint8_t>& transcript,
                      int made) {
  pid_t root = a->pids[0];
  a->rssBeforeKb = rssKb(root);
  a->rssPeakKb = a->rssBeforeKb;
  HostileOptions o;
  o.host = job.host;
  o.port = job.port;
  o.connections = std::max(0, job.connections - made);
  o.kinds = {HostileKind::kGarbage, HostileKind::kEarlyClose, HostileKind::kStalled};
  if (!transcript.empty()) o.kinds.push_back(HostileKind::kReplay);
  o.replay = transcript;
  o.onRound = [&] {
    a->rssPeakKb = std::max(a->rssPeakKb, rssKb(root));
    return true;
  };
  store(runHostileFlood(o), a->steadyTally);
  a->rssAfterKb = rssKb(root);
}

int attackerMain(HostileArena* a, const Job& job) {
  if (!waitFor([&] { return a->attackerGo.load() != 0; }, 60000)) return 2;
  // The root listens once rank 0 has started.
  if (!waitFor(
          [&] {
            for (const auto& l : listeningSockets({a->pids[0]}))
              if (l.port == job.port) return true;
            return false;
          },
          30000))
    return 3;
  LoopbackSniffer sniffer;
  std::string why;
  bool sniffing = sniffer.start(job.port, &why);
  std::vector<int> ownPorts;
  int made = floodDuringInit(a, job, &sniffer, sniffing, &ownPorts);
  for (int r = 0; r < kRanks; ++r)
    if (!waitFor([&] { return a->iters[r].load() > 0; }, 60000)) {
      copyText(a->note, sizeof(a->note), "rank " + std::to_string(r) + " never ran a collective");
      a->attackerDone.store(1);
      return 4;
    }
  copyText(a->listeners, sizeof(a->listeners), describe(listeningSockets(rankPids(a))));
  std::vector<uint8_t> transcript;
  if (sniffing) {
    sniffer.pump();
    a->captured = sniffer.take(kTranscriptBytes, ownPorts, &transcript);
    if (!a->captured) why = "no rank's handshake was seen on lo";
  }
  if (!a->captured) copyText(a->note, sizeof(a->note), "replay not tested: " + why);
  floodSteadyState(a, job, transcript, made);
  a->attackerDone.store(1);
  return 0;
}

std::string randomHex(size_t digits) {
  std::ifstream in("/dev/urandom", std::ios::binary);
  std::string out;
  const char* hex = "0123456789abcdef";
  while (out.size() < digits) out += hex[in.get() & 15];
  return out;
}

// Every file of dir, concatenated.
std::string readLogs(const std::string& dir, int* files) {
  std::string all;
  *files = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream in(dir + "/" + e->d_name);
      std::stringstream ss;
      ss << in.rdbuf();
      all += ss.str();
      ++*files;
    }
    closedir(d);
  }
  return all;
}

void expectAllRejected(const char* phase, const HostileTally* t, bool connectsMayFail) {
  for (int k = 0; k < kKinds; ++k) {
    const HostileTally& x = t[k];
    if (x.attempted == 0) continue;
    std::printf("FAULT_HOSTILE phase=%s kind=%s %s\n", phase,
                hostileKindName(static_cast<HostileKind>(k)), x.text().c_str());
    EXPECT_EQ(x.lingering, 0) << phase << " " << hostileKindName(static_cast<HostileKind>(k));
    EXPECT_EQ(x.overfed, 0) << phase << " " << hostileKindName(static_cast<HostileKind>(k));
    EXPECT_EQ(x.rejected + x.connectFailed, x.attempted) << phase;
    if (!connectsMayFail) {
      EXPECT_EQ(x.connectFailed, 0) << phase << " " << hostileKindName(static_cast<HostileKind>(k));
    }
  }
}

TEST(FaultHostile, StrangersAreRejectedWhileAJobStartsAndRuns) {
  Job job;
  job.host = defaultInterfaceAddress();
  job.port = freePort(job.host);
  ASSERT_NE(job.port, 0);
  job.secret = randomHex(64);
  job.connections = envInt("OBCCL_FAULT_HOSTILE_CONNECTIONS", 1000);
  char dir[] = "/tmp/obccl-hostile-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  job.logDir = dir;
  Shared<HostileArena> a;
  ProcSet ps;
  for (int r = 0; r < kRanks; ++r) {
    ps.spawn([&, r] { return rankMain(a.get(), job, r); }, 600);
    a->pids[r] = ps.pid(r);
  }
  int attacker = ps.spawn([&] { return attackerMain(a.get(), job); }, 600);
  a->attackerGo.store(1);
  a->goRoot.store(1);
  ASSERT_TRUE(waitFor([&] { return a->initFlooding.load() != 0; }, 60000)) << "no flood";
  a->goOthers.store(1);
  ChildExit ae;
  bool attackerEnded = ps.waitOne(attacker, 300000, &ae);
  a->stop.store(1);
  std::vector<ChildExit> ex = ps.waitAll(30000);
  ASSERT_TRUE(attackerEnded) << "the attacker hung";
  EXPECT_TRUE(ae.ok()) << "attacker " << ae.describe() << ": " << a->note;
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(ex[r].ok()) << "rank " << r << " " << ex[r].describe() << ": " << a->msg[r];
    EXPECT_GT(a->iters[r].load(), 0) << "rank " << r;
    EXPECT_EQ(a->wrong[r], 0) << "rank " << r;
  }
  std::printf(
      "FAULT_HOSTILE job: %d allreduces per rank completed while %d hostile connections "
      "ran; data listeners seen during init: %d (%s), %d connections aimed at them; listening "
      "after init: %s\n",
      a->iters[0].load(), job.connections, a->dataListenersSeen, a->listenersDuring, a->dataHits,
      a->listeners);
  expectAllRejected("init", a->initTally, /*connectsMayFail=*/true);
  expectAllRejected("steady", a->steadyTally, false);
  if (!a->captured) std::printf("FAULT_HOSTILE %s\n", a->note);
  // Memory held for strangers is bounded (at most maxPendingHandshakes small records).
  std::printf("FAULT_HOSTILE root RSS: before %ld KiB, peak %ld KiB, after %ld KiB\n",
              a->rssBeforeKb, a->rssPeakKb, a->rssAfterKb);
  EXPECT_LT(a->rssPeakKb - a->rssBeforeKb, 16 * 1024) << "root RSS grew under the flood";
  // After init only the root listens, on the chosen interface.
  EXPECT_EQ(std::string(a->listeners), job.host + ":" + std::to_string(job.port))
      << "listeners after init (want only the root, on " << job.host << ")";
  std::string during = a->listenersDuring;
  EXPECT_EQ(during.find("0.0.0.0"), std::string::npos) << during;
  EXPECT_EQ(during.find("::"), std::string::npos) << during;
  int files = 0;
  std::string logs = readLogs(job.logDir, &files);
  std::string upper = job.secret;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  EXPECT_GE(files, kRanks) << "no TRACE logs in " << job.logDir;
  EXPECT_NE(logs.find("dropping connection"), std::string::npos) << "the root logged no drops";
  EXPECT_EQ(logs.find(job.secret), std::string::npos) << "the secret is in the logs";
  EXPECT_EQ(logs.find(upper), std::string::npos) << "the secret is in the logs";
  EXPECT_EQ(logs.find(job.secret.substr(0, 16)), std::string::npos) << "part of the secret";
  std::printf("FAULT_HOSTILE logs: %d files, %zu bytes, secret found: %s\n", files, logs.size(),
              logs.find(job.secret) == std::string::npos ? "no" : "YES");
  if (!HasFailure()) {
    std::string cmd = "rm -rf " + job.logDir;
    (void)system(cmd.c_str());
  }
}

}  // namespace
}  // namespace obccl_fault

// The test executable's connect() interposes libc's for libobccl too (it is exported because the
// library refers to it), which lets the last rank hold back its data connections.
extern "C" __attribute__((visibility("default"))) int connect(int fd, const struct sockaddr* addr,
                                                              socklen_t len) {
  using Real = int (*)(int, const struct sockaddr*, socklen_t);
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "connect"));
  if (obccl_fault::gDataConnectDelayMs > 0 && addr != nullptr &&
      (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    int port = ntohs(reinterpret_cast<const struct sockaddr_in*>(addr)->sin_port);
    if (port != obccl_fault::gRootPort) {
      obccl_fault::sleepMs(obccl_fault::gDataConnectDelayMs);
      obccl_fault::gDataConnectDelayMs = 0;
    }
  }
  return real(fd, addr, len);
}
