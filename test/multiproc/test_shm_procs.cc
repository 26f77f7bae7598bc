// The shm transport between forked processes: real cross-process rings, an oversubscribed host,
// a peer killed with SIGKILL mid-transfer (the survivor must fail within 2 s, not hang), a
// stopped peer (not mistaken for a dead one), and nothing left behind in /dev/shm.
#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>

#include "transports/shm/shm_transport.h"

namespace obccl::transport {
namespace {

constexpr int kMaxRanks = 8;
constexpr int kMaxRounds = 16;
constexpr int kSlotBytes = 64;

double monotonicSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// State shared by the parent and its forked ranks (an anonymous shared mapping made before fork).
struct Shared {
  std::atomic<int> arrived[kMaxRounds];
  uint8_t slots[kMaxRounds][kMaxRanks][kSlotBytes];
  std::atomic<uint64_t> progress[kMaxRanks];  // bytes a rank has moved so far
  std::atomic<int> ready;                     // ranks that finished connecting
  double killedAt;                            // written by the parent
  double failedAt[kMaxRanks];                 // written by a rank that saw its peer die
  char message[kMaxRanks][512];               // a rank's failure or result text
};

class ProcGroup {
 public:
  explicit ProcGroup(int n) : n_(n) {
    void* p =
        mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    shared_ = p == MAP_FAILED ? nullptr : new (p) Shared();
    std::random_device rd;
    commId_ = (static_cast<uint64_t>(rd()) << 32) | rd();
  }
  ~ProcGroup() {
    if (shared_ != nullptr) munmap(shared_, sizeof(Shared));
  }
  Shared* shared() { return shared_; }
  uint64_t commId() const { return commId_; }

  // An allgather across the forked ranks: one fresh slot row per round, so nothing is reused.
  Status allgather(int rank, int* round, const std::vector<uint8_t>& mine,
                   std::vector<uint8_t>* all) {
    int k = (*round)++;
    if (k >= kMaxRounds || mine.size() > kSlotBytes) return internalError("test allgather full");
    std::memcpy(shared_->slots[k][rank], mine.data(), mine.size());
    shared_->arrived[k].fetch_add(1);
    Deadline deadline = Deadline::afterMs(20000);
    while (shared_->arrived[k].load() < n_) {
      if (deadline.expired()) return timeoutError("test allgather: peers missing after 20 s");
      usleep(100);
    }
    all->clear();
    for (int r = 0; r < n_; ++r)
      all->insert(all->end(), shared_->slots[k][r], shared_->slots[k][r] + mine.size());
    return Status::ok();
  }

  // Forks n ranks running body(rank); each exits with body's code (or dies after 60 s).
  void start(const std::function<int(int)>& body) {
    for (int r = 0; r < n_; ++r) {
      pid_t pid = fork();
      if (pid == 0) {
        alarm(150);
        _exit(body(r));
      }
      pids_.push_back(pid);
    }
  }
  pid_t pid(int rank) const { return pids_[rank]; }

  // Waits for every rank (deadline, then SIGKILL); returns each one's wait status.
  std::vector<int> wait(int64_t deadlineMs = 30000) {
    std::vector<int> status(n_, -1);
    Deadline deadline = Deadline::afterMs(deadlineMs);
    int left = n_;
    while (left > 0) {
      for (int r = 0; r < n_; ++r) {
        if (status[r] != -1) continue;
        int st;
        if (waitpid(pids_[r], &st, WNOHANG) == pids_[r]) {
          status[r] = st;
          --left;
        }
      }
      if (left > 0 && deadline.expired())
        for (int r = 0; r < n_; ++r)
          if (status[r] == -1) kill(pids_[r], SIGKILL);
      usleep(1000);
    }
    return status;
  }

  // Names in /dev/shm that belong to this group's communicator.
  std::vector<std::string> leftovers() const {
    char id[32];
    std::snprintf(id, sizeof(id), "obccl-%016" PRIx64 "-", commId_);
    std::vector<std::string> out;
    if (DIR* d = opendir("/dev/shm")) {
      while (dirent* e = readdir(d))
        if (std::strncmp(e->d_name, id, std::strlen(id)) == 0) out.push_back(e->d_name);
      closedir(d);
    }
    return out;
  }

  // Connects rank to every other rank (in a child).
  Status connectAll(int rank, std::vector<std::unique_ptr<Connection>>* conns) {
    auto t = makeShmTransport();
    ConnectContext ctx;
    ctx.rank = rank;
    ctx.nranks = n_;
    ctx.commId = commId_;
    ctx.hostOf.assign(n_, "this-host");
    int* round = &round_;
    ctx.allgather = [this, rank, round](const std::vector<uint8_t>& mine,
                                        std::vector<uint8_t>* all) {
      return allgather(rank, round, mine, all);
    };
    std::vector<int> peers;
    for (int p = 0; p < n_; ++p)
      if (p != rank) peers.push_back(p);
    return t->connect(ctx, peers, conns);
  }

 private:
  int n_;
  Shared* shared_ = nullptr;
  uint64_t commId_ = 0;
  int round_ = 0;  // per process: each forked rank has its own copy
  std::vector<pid_t> pids_;
};

// Records a failure message for the parent and returns the exit code for it.
int childFail(Shared* s, int rank, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(s->message[rank], sizeof(s->message[rank]), fmt, ap);
  va_end(ap);
  return 1;
}

FrameHeader makeHeader(uint64_t commId, uint64_t seq, uint64_t length) {
  FrameHeader h;
  h.commId = commId;
  h.seq = seq;
  h.length = length;
  sealHeader(&h);
  return h;
}

// Progresses until every request is done, spinning with sched_yield() briefly and then sleeping
// in poll() on the doorbells, the way core waits.
Status drive(const std::vector<Connection*>& conns, const std::vector<Request*>& reqs,
             std::atomic<uint64_t>* progressOut = nullptr, int spins = 32) {
  Deadline deadline = Deadline::afterMs(30000);
  for (int spin = 0;; ++spin) {
    for (Connection* c : conns) OBCCL_TRY(c->progress());
    if (progressOut != nullptr) {
      uint64_t moved = 0;
      for (Connection* c : conns) moved += c->bytesSent() + c->bytesReceived();
      progressOut->store(moved);
    }
    bool done = true;
    for (Request* r : reqs) done &= r->done;
    if (done) return Status::ok();
    if (deadline.expired()) return timeoutError("test: requests not done after 30 s");
    if (spin < spins) {
      sched_yield();
      continue;
    }
    spin = 0;
    std::vector<pollfd> fds;
    for (Connection* c : conns)
      if (c->busy()) fds.push_back({c->pollFd(), c->pollEvents(), 0});
    // Bounded, as core's waits are: a peer that dies without closing its fds (a forked child
    // keeps them open) cannot ring, and is noticed by the pid check on the next progress().
    ::poll(fds.data(), fds.size(), deadline.remainingMs(100));
  }
}

uint8_t byteAt(int rank, size_t i) { return static_cast<uint8_t>(rank * 31 + i * 7 + (i >> 12)); }

// Every rank sends `bytes` to every other rank and checks what it receives.
int exchangeBody(ProcGroup& g, int rank, int n, size_t bytes) {
  Shared* s = g.shared();
  std::vector<std::unique_ptr<Connection>> conns;
  Status st = g.connectAll(rank, &conns);
  if (!st.isOk()) return childFail(s, rank, "connect: %s", st.message().c_str());
  std::vector<uint8_t> out(bytes);
  for (size_t i = 0; i < bytes; ++i) out[i] = byteAt(rank, i);
  std::vector<std::vector<uint8_t>> in(n - 1, std::vector<uint8_t>(bytes));
  std::vector<Request> sends(n - 1), recvs(n - 1);
  std::vector<Request*> reqs;
  std::vector<Connection*> cs;
  FrameHeader h = makeHeader(g.commId(), rank, bytes);
  for (int i = 0; i < n - 1; ++i) {
    cs.push_back(conns[i].get());
    if (!cs[i]->postSend(h, out.data(), &sends[i]).isOk() ||
        !cs[i]->postRecv(in[i].data(), bytes, &recvs[i]).isOk())
      return childFail(s, rank, "post failed");
    reqs.push_back(&sends[i]);
    reqs.push_back(&recvs[i]);
  }
  st = drive(cs, reqs);
  if (!st.isOk()) return childFail(s, rank, "drive: %s", st.message().c_str());
  for (int i = 0; i < n - 1; ++i) {
    int peer = i < rank ? i : i + 1;
    if (recvs[i].header.seq != static_cast<uint64_t>(peer))
      return childFail(s, rank, "frame from %d has seq %d", peer, (int)recvs[i].header.seq);
    for (size_t k = 0; k < bytes; ++k)
      if (in[i][k] != byteAt(peer, k))
        return childFail(s, rank, "byte %zu from rank %d differs", k, peer);
  }
  return 0;
}

void expectAllExitedCleanly(ProcGroup& g, const std::vector<int>& status) {
  for (size_t r = 0; r < status.size(); ++r)
    EXPECT_TRUE(WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0)
        << "rank " << r << " wait status " << status[r] << ": " << g.shared()->message[r];
}

TEST(ShmProcs, ExchangeAcrossProcesses) {
  constexpr int kRanks = 4;
  ProcGroup g(kRanks);
  ASSERT_NE(g.shared(), nullptr);
  g.start([&](int r) { return exchangeBody(g, r, kRanks, (16u << 20) + 5); });
  expectAllExitedCleanly(g, g.wait());
  EXPECT_TRUE(g.leftovers().empty()) << g.leftovers()[0];
}

TEST(ShmProcs, OversubscribedHostStillProgresses) {
  // Eight ranks on (typically) two cores: waiting must yield and sleep, never spin the CPU away.
  constexpr int kRanks = 8;
  ProcGroup g(kRanks);
  ASSERT_NE(g.shared(), nullptr);
  double start = monotonicSeconds();
  g.start([&](int r) { return exchangeBody(g, r, kRanks, 1u << 20); });
  expectAllExitedCleanly(g, g.wait());
  EXPECT_LT(monotonicSeconds() - start, 20.0);
  EXPECT_TRUE(g.leftovers().empty());
}

// Rank 0 (the survivor) streams 64 MiB frames with rank 1 forever: it receives them when
// survivorReceives, else sends them. The parent kills rank 1 mid-stream.
// With forkHolder, rank 1 forks a process that keeps its fds open for 2 s, so the survivor's
// doorbell does not hang up and the pid check has to notice the death.
int streamBody(ProcGroup& g, int rank, bool survivorReceives, bool forkHolder) {
  Shared* s = g.shared();
  std::vector<std::unique_ptr<Connection>> conns;
  Status st = g.connectAll(rank, &conns);
  if (!st.isOk()) return childFail(s, rank, "connect: %s", st.message().c_str());
  if (forkHolder && rank == 1 && fork() == 0) {
    sleep(2);
    _exit(0);
  }
  s->ready.fetch_add(1);
  constexpr size_t kFrame = 64u << 20;
  std::vector<uint8_t> buf(kFrame, static_cast<uint8_t>(rank));
  bool receiving = (rank == 0) == survivorReceives;
  Connection* c = conns[0].get();
  for (uint64_t seq = 0;; ++seq) {
    Request req;
    FrameHeader h = makeHeader(g.commId(), seq, kFrame);
    st = receiving ? c->postRecv(buf.data(), kFrame, &req) : c->postSend(h, buf.data(), &req);
    if (st.isOk()) st = drive({c}, {&req}, &s->progress[rank]);
    if (st.isOk()) continue;
    s->failedAt[rank] = monotonicSeconds();
    std::snprintf(s->message[rank], sizeof(s->message[rank]), "%s", st.message().c_str());
    return st.code() == obcclRemoteError ? 0 : 2;
  }
}

void killMidTransfer(bool survivorReceives, bool forkHolder = false) {
  ProcGroup g(2);
  ASSERT_NE(g.shared(), nullptr);
  Shared* s = g.shared();
  g.start([&](int r) { return streamBody(g, r, survivorReceives, forkHolder); });
  // Kill rank 1 once rank 0 has moved 100 MiB, i.e. in the middle of the stream.
  Deadline deadline = Deadline::afterMs(20000);
  while (s->progress[0].load() < (100u << 20) && !deadline.expired()) usleep(200);
  ASSERT_FALSE(deadline.expired()) << "the stream never got going";
  s->killedAt = monotonicSeconds();
  ASSERT_EQ(kill(g.pid(1), SIGKILL), 0);
  std::vector<int> status = g.wait();
  EXPECT_TRUE(WIFSIGNALED(status[1]) && WTERMSIG(status[1]) == SIGKILL);
  ASSERT_TRUE(WIFEXITED(status[0]) && WEXITSTATUS(status[0]) == 0)
      << "survivor status " << status[0] << ": " << s->message[0];
  std::string msg = s->message[0];
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("died or was killed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pid " + std::to_string(g.pid(1))), std::string::npos) << msg;
  double delay = s->failedAt[0] - s->killedAt;
  std::printf("survivor reported the killed peer after %.1f ms: %s\n", delay * 1e3, msg.c_str());
  EXPECT_LT(delay, 2.0) << msg;
  EXPECT_GE(delay, 0.0);
  EXPECT_TRUE(g.leftovers().empty());
}

TEST(ShmProcs, KilledSenderIsReportedWithinTwoSeconds) { killMidTransfer(true); }

TEST(ShmProcs, KilledReceiverIsReportedWithinTwoSeconds) { killMidTransfer(false); }

TEST(ShmProcs, KilledPeerIsFoundByPidWhenItsFdsLiveOn) { killMidTransfer(true, true); }

TEST(ShmProcs, KillingAJobWaitingForARankLeavesNothing) {
  // Ranks 0 and 1 enter connect; rank 2 never does. The whole job is then killed, as a launcher
  // does when one rank fails: nothing may have been created in /dev/shm yet.
  ProcGroup g(3);
  ASSERT_NE(g.shared(), nullptr);
  Shared* s = g.shared();
  g.start([&](int r) {
    if (r == 2) pause();
    std::vector<std::unique_ptr<Connection>> conns;
    (void)g.connectAll(r, &conns);
    return 0;
  });
  Deadline deadline = Deadline::afterMs(20000);
  while (s->arrived[0].load() < 2 && !deadline.expired()) usleep(200);
  ASSERT_FALSE(deadline.expired());
  usleep(50 * 1000);
  for (int r = 0; r < 3; ++r) kill(g.pid(r), SIGKILL);
  g.wait();
  EXPECT_TRUE(g.leftovers().empty()) << g.leftovers()[0];
}

TEST(ShmProcs, StoppedPeerIsNotTakenForDead) {
  ProcGroup g(2);
  ASSERT_NE(g.shared(), nullptr);
  Shared* s = g.shared();
  // Rank 1 stays stopped for 300 ms (several liveness checks) mid-exchange; both must finish.
  g.start([&](int r) { return exchangeBody(g, r, 2, 64u << 20); });
  Deadline deadline = Deadline::afterMs(20000);
  while (s->arrived[1].load() < 2 && !deadline.expired()) usleep(200);  // connected
  ASSERT_EQ(kill(g.pid(1), SIGSTOP), 0);
  usleep(300 * 1000);
  ASSERT_EQ(kill(g.pid(1), SIGCONT), 0);
  expectAllExitedCleanly(g, g.wait());
}

// Measurements, not checks (run with --gtest_also_run_disabled_tests --gtest_filter='*Bench*'):
// rank 0 streams `iters` frames of each size to rank 1, which acknowledges the last one, and an
// 8-byte ping-pong gives the round-trip latency. memcpy of the same sizes is shown for scale.
Status pingPong(ProcGroup& g, Connection* c, int rank, int spins, double* rtt) {
  constexpr int kRounds = 20000;
  uint64_t v = 0;
  double t0 = 0;
  for (int i = -1000; i < kRounds; ++i) {  // 1000 warm-up rounds
    if (i == 0) t0 = monotonicSeconds();
    Request a, b;
    FrameHeader h = makeHeader(g.commId(), 2, sizeof(v));
    if (rank == 0) {
      OBCCL_TRY(c->postSend(h, &v, &a));
      OBCCL_TRY(c->postRecv(&v, sizeof(v), &b));
    } else {
      OBCCL_TRY(c->postRecv(&v, sizeof(v), &a));
      OBCCL_TRY(drive({c}, {&a}, nullptr, spins));
      OBCCL_TRY(c->postSend(h, &v, &b));
    }
    OBCCL_TRY(drive({c}, {&a, &b}, nullptr, spins));
  }
  *rtt = (monotonicSeconds() - t0) / kRounds;
  return Status::ok();
}

int benchBody(ProcGroup& g, int rank) {
  Shared* s = g.shared();
  std::vector<std::unique_ptr<Connection>> conns;
  Status st = g.connectAll(rank, &conns);
  if (!st.isOk()) return childFail(s, rank, "connect: %s", st.message().c_str());
  Connection* c = conns[0].get();
  std::vector<uint8_t> buf(64u << 20, 1);
  std::string report;
  uint64_t ack = 0;
  for (size_t size = 64u << 10; size <= (64u << 20); size *= 4) {
    int iters = static_cast<int>(std::max<size_t>(16, (512u << 20) / size));
    for (int pass = 0; pass < 2; ++pass) {  // the first pass warms up pages and caches
      double t0 = monotonicSeconds();
      std::vector<Request> reqs(iters);
      std::vector<Request*> ptrs;
      FrameHeader h = makeHeader(g.commId(), 0, size);
      for (int i = 0; i < iters; ++i) {
        ptrs.push_back(&reqs[i]);
        st = rank == 0 ? c->postSend(h, buf.data(), &reqs[i])
                       : c->postRecv(buf.data(), size, &reqs[i]);
        if (!st.isOk()) return childFail(s, rank, "post: %s", st.message().c_str());
      }
      Request a;
      FrameHeader ah = makeHeader(g.commId(), 1, sizeof(ack));
      st = drive({c}, ptrs);
      if (st.isOk())
        st = rank == 0 ? c->postRecv(&ack, sizeof(ack), &a) : c->postSend(ah, &ack, &a);
      if (st.isOk()) st = drive({c}, {&a});
      if (!st.isOk()) return childFail(s, rank, "stream: %s", st.message().c_str());
      double secs = monotonicSeconds() - t0;
      char line[160];
      std::snprintf(line, sizeof(line), "%10zu %6d %9.2f GB/s\n", size, iters,
                    size * static_cast<double>(iters) / secs / 1e9);
      if (pass == 1) report += line;
    }
  }
  // Spinning (yielding) before sleeping, and sleeping in poll() at once as core's waiter does.
  for (int spins : {1000000, 0}) {
    double rtt = 0;
    st = pingPong(g, c, rank, spins, &rtt);
    if (!st.isOk()) return childFail(s, rank, "pingpong: %s", st.message().c_str());
    char line[160];
    std::snprintf(line, sizeof(line), "8-byte round trip %.2f us (one way %.2f us), %s\n",
                  rtt * 1e6, rtt * 0.5e6, spins ? "spinning" : "sleeping in poll()");
    report += line;
  }
  std::snprintf(s->message[rank], sizeof(s->message[rank]), "%s", report.c_str());
  return 0;
}

TEST(ShmProcs, DISABLED_BenchBandwidthAndLatency) {
  ProcGroup g(2);
  ASSERT_NE(g.shared(), nullptr);
  g.start([&](int r) { return benchBody(g, r); });
  expectAllExitedCleanly(g, g.wait(120000));
  std::printf("shm point-to-point, 2 processes (bytes, frames, bandwidth):\n%s",
              g.shared()->message[0]);
  std::vector<uint8_t> a(64u << 20, 1), b(64u << 20);
  for (size_t size = 64u << 10; size <= (64u << 20); size *= 4) {
    int iters = static_cast<int>(std::max<size_t>(16, (512u << 20) / size));
    std::memcpy(b.data(), a.data(), size);
    double t0 = monotonicSeconds();
    for (int i = 0; i < iters; ++i) std::memcpy(b.data(), a.data() + (i & 1), size);
    double secs = monotonicSeconds() - t0;
    std::printf("memcpy %10zu %9.2f GB/s\n", size, size * static_cast<double>(iters) / secs / 1e9);
  }
}

}  // namespace
}  // namespace obccl::transport
