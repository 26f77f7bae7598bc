// The shm transport between threads of one process: connect through an in-test allgather, FIFO
// order, large bidirectional streams, corrupt headers, oversize payloads, closed peers and
// /dev/shm hygiene.
#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <mutex>
#include <thread>

#include "transports/shm/shm_segment.h"
#include "transports/shm/shm_transport.h"

namespace obccl::transport {
namespace {

constexpr uint64_t kCommId = 0x5eed0bcc1;

// Names this process created in /dev/shm (segment and doorbell names carry the creator's pid).
std::vector<std::string> ourShmNames() {
  std::vector<std::string> out;
  std::string mark = "-" + std::to_string(getpid()) + "-";
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("obccl-", 0) == 0 && n.find(mark) != std::string::npos) out.push_back(n);
    }
    closedir(d);
  }
  return out;
}

// An allgather across the threads of one test: a barrier that also concatenates contributions.
class ThreadAllgather {
 public:
  explicit ThreadAllgather(int n) : n_(n), slots_(n) {}
  Status operator()(int rank, const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t round = round_;
    slots_[rank] = mine;
    if (++arrived_ == n_) {
      result_.clear();
      for (const auto& s : slots_) result_.insert(result_.end(), s.begin(), s.end());
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return round_ != round; })) {
      return timeoutError("test allgather: rank " + std::to_string(rank) + " waited 20 s");
    }
    *all = result_;
    return Status::ok();
  }

 private:
  int n_;
  std::vector<std::vector<uint8_t>> slots_;
  std::vector<uint8_t> result_;
  int arrived_ = 0;
  uint64_t round_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
};

// Runs fn(rank) on n threads and joins them.
void runRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

ConnectContext makeContext(int rank, int nranks, ThreadAllgather* ag) {
  ConnectContext ctx;
  ctx.rank = rank;
  ctx.nranks = nranks;
  ctx.commId = kCommId;
  ctx.deadline = Deadline::afterMs(20000);
  ctx.hostOf.assign(nranks, "host-a");
  ctx.allgather = [ag, rank](const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
    return (*ag)(rank, mine, all);
  };
  return ctx;
}

using Conns = std::vector<std::unique_ptr<Connection>>;

// Connects every rank to peersOf(rank); status[r] is rank r's result.
std::vector<Conns> connectAll(int n, const std::function<std::vector<int>(int)>& peersOf,
                              std::vector<Status>* status) {
  ThreadAllgather ag(n);
  std::vector<Conns> conns(n);
  status->assign(n, Status::ok());
  runRanks(n, [&](int r) {
    auto t = makeShmTransport();
    (*status)[r] = t->connect(makeContext(r, n, &ag), peersOf(r), &conns[r]);
  });
  return conns;
}

std::vector<int> allButMe(int rank, int n) {
  std::vector<int> v;
  for (int p = 0; p < n; ++p)
    if (p != rank) v.push_back(p);
  return v;
}

std::vector<Conns> connectFull(int n) {
  std::vector<Status> status;
  auto conns = connectAll(
      n, [n](int r) { return allButMe(r, n); }, &status);
  for (int r = 0; r < n; ++r) EXPECT_TRUE(status[r].isOk()) << status[r].message();
  return conns;
}

FrameHeader makeHeader(uint64_t seq, uint64_t length) {
  FrameHeader h;
  h.op = 3;
  h.commId = kCommId;
  h.seq = seq;
  h.count = length;
  h.length = length;
  sealHeader(&h);
  return h;
}

// Progresses until every request is done: spins (yielding) a little, then sleeps in poll() on
// the busy connections' doorbells. maxPollMs bounds each sleep.
Status drive(const std::vector<Connection*>& conns, const std::vector<Request*>& reqs,
             int spins = 64, int maxPollMs = 1000) {
  Deadline deadline = Deadline::afterMs(30000);
  for (int spin = 0;; ++spin) {
    for (Connection* c : conns) OBCCL_TRY(c->progress());
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
      if (c->busy() && c->pollFd() >= 0) fds.push_back({c->pollFd(), c->pollEvents(), 0});
    ::poll(fds.data(), fds.size(), deadline.remainingMs(maxPollMs));
  }
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    v[i] = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~EnvVar() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(ShmTransport, RemovesOnlyOldNamesOfDeadProcesses) {
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  ASSERT_EQ(waitpid(dead, nullptr, 0), dead);
  auto make = [](pid_t pid, const char* tag, bool old) {
    std::string path = "/dev/shm/obccl-00000000000000aa-" + std::to_string(pid) + "-" + tag;
    FILE* f = std::fopen(path.c_str(), "w");
    if (f != nullptr) std::fclose(f);
    if (old) {
      timeval times[2] = {{time(nullptr) - 3600, 0}, {time(nullptr) - 3600, 0}};
      utimes(path.c_str(), times);
    }
    return path;
  };
  std::string staleDead = make(dead, "00000001-0-1", true);
  std::string freshDead = make(dead, "00000002-0-1", false);
  std::string oldAlive = make(getpid(), "00000003-0-1", true);
  shm::removeStaleNames();
  EXPECT_NE(access(staleDead.c_str(), F_OK), 0);
  EXPECT_EQ(access(freshDead.c_str(), F_OK), 0);
  EXPECT_EQ(access(oldAlive.c_str(), F_OK), 0);
  std::remove(freshDead.c_str());
  std::remove(oldAlive.c_str());
}

TEST(ShmTransport, CanConnectOnlyOnTheSameHost) {
  auto t = makeShmTransport();
  EXPECT_STREQ(t->name(), "shm");
  ConnectContext ctx;
  ctx.rank = 0;
  ctx.nranks = 3;
  ctx.hostOf = {"a", "a", "b"};
  EXPECT_TRUE(t->canConnect(ctx, 1));
  EXPECT_FALSE(t->canConnect(ctx, 2));
  EXPECT_FALSE(t->canConnect(ctx, 0));
  EXPECT_FALSE(t->canConnect(ctx, 3));
  ctx.hostOf.clear();
  EXPECT_FALSE(t->canConnect(ctx, 1));
}

TEST(ShmTransport, ConnectLeavesNothingInDevShm) {
  ASSERT_TRUE(ourShmNames().empty());
  {
    auto conns = connectFull(4);
    EXPECT_TRUE(ourShmNames().empty()) << ourShmNames()[0];
    ASSERT_EQ(conns[2].size(), 3u);
    EXPECT_EQ(conns[2][0]->describe(), "shm to rank 0 (pid " + std::to_string(getpid()) + ")");
  }
  EXPECT_TRUE(ourShmNames().empty());
}

TEST(ShmTransport, FramesArriveInOrder) {
  auto conns = connectFull(2);
  constexpr int kFrames = 500;
  std::vector<std::vector<uint8_t>> payloads;
  for (int i = 0; i < kFrames; ++i) payloads.push_back(pattern((i * 7919) % 20000, i));
  runRanks(2, [&](int r) {
    Connection* c = conns[r][0].get();
    std::vector<Request> reqs(kFrames);
    std::vector<Request*> ptrs;
    std::vector<FrameHeader> headers;
    std::vector<std::vector<uint8_t>> bufs(kFrames, std::vector<uint8_t>(20000));
    for (int i = 0; i < kFrames; ++i) {
      ptrs.push_back(&reqs[i]);
      if (r == 0) {
        headers.push_back(makeHeader(i, payloads[i].size()));
        ASSERT_TRUE(c->postSend(headers.back(), payloads[i].data(), &reqs[i]).isOk());
      } else {
        ASSERT_TRUE(c->postRecv(bufs[i].data(), bufs[i].size(), &reqs[i]).isOk());
      }
    }
    Status s = drive({c}, ptrs);
    ASSERT_TRUE(s.isOk()) << s.message();
    for (int i = 0; i < kFrames && r == 1; ++i) {
      ASSERT_TRUE(reqs[i].status.isOk()) << reqs[i].status.message();
      ASSERT_EQ(reqs[i].header.seq, static_cast<uint64_t>(i));
      ASSERT_EQ(reqs[i].bytes, payloads[i].size());
      ASSERT_TRUE(std::equal(payloads[i].begin(), payloads[i].end(), bufs[i].begin())) << i;
    }
  });
  uint64_t expect = 0;
  for (const auto& p : payloads) expect += sizeof(FrameHeader) + p.size();
  EXPECT_EQ(conns[0][0]->bytesSent(), expect);
  EXPECT_EQ(conns[1][0]->bytesReceived(), expect);
}

// Every rank sends `bytes` to every other rank at once and receives as much from each.
void exchangeAll(std::vector<Conns>& conns, size_t bytes) {
  int n = static_cast<int>(conns.size());
  runRanks(n, [&](int r) {
    auto out = pattern(bytes, r);
    std::vector<std::vector<uint8_t>> in(n - 1, std::vector<uint8_t>(bytes));
    std::vector<Request> sends(n - 1), recvs(n - 1);
    std::vector<Request*> reqs;
    std::vector<Connection*> cs;
    FrameHeader h = makeHeader(r, bytes);
    for (int i = 0; i < n - 1; ++i) {
      Connection* c = conns[r][i].get();
      cs.push_back(c);
      ASSERT_TRUE(c->postSend(h, out.data(), &sends[i]).isOk());
      ASSERT_TRUE(c->postRecv(in[i].data(), bytes, &recvs[i]).isOk());
      reqs.push_back(&sends[i]);
      reqs.push_back(&recvs[i]);
    }
    Status s = drive(cs, reqs);
    ASSERT_TRUE(s.isOk()) << "rank " << r << ": " << s.message();
    for (int i = 0; i < n - 1; ++i) {
      int peer = i < r ? i : i + 1;
      ASSERT_TRUE(recvs[i].status.isOk());
      ASSERT_EQ(recvs[i].header.seq, static_cast<uint64_t>(peer));
      ASSERT_TRUE(in[i] == pattern(bytes, peer)) << "rank " << r << " from " << peer;
    }
  });
}

TEST(ShmTransport, LargeBidirectionalExchangeDoesNotDeadlock) {
  auto conns = connectFull(2);
  exchangeAll(conns, 64u << 20);
}

TEST(ShmTransport, FourRanksAllToAll) {
  auto conns = connectFull(4);
  exchangeAll(conns, (8u << 20) + 13);
}

TEST(ShmTransport, SmallRingStreamsOddSizes) {
  EnvVar ring("OBCCL_SHM_RING_BYTES", "65536");
  auto conns = connectFull(3);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{63}, size_t{65}, size_t{65536 - 64},
                       size_t{65536}, size_t{3 << 20} + 7})
    exchangeAll(conns, bytes);
}

TEST(ShmTransport, CorruptHeaderIsARemoteErrorAndSticky) {
  auto conns = connectFull(2);
  uint8_t payload[16] = {};
  FrameHeader bad = makeHeader(1, sizeof(payload));
  bad.count = 99;  // changed after sealing: the header checksum no longer matches
  Request send, recv;
  ASSERT_TRUE(conns[0][0]->postSend(bad, payload, &send).isOk());
  ASSERT_TRUE(drive({conns[0][0].get()}, {&send}).isOk());
  uint8_t buf[16];
  ASSERT_TRUE(conns[1][0]->postRecv(buf, sizeof(buf), &recv).isOk());
  Status s = conns[1][0]->progress();
  EXPECT_EQ(s.code(), obcclRemoteError);
  EXPECT_NE(s.message().find("corrupted frame header"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rank 0"), std::string::npos) << s.message();
  EXPECT_TRUE(recv.done);
  EXPECT_EQ(recv.status.code(), obcclRemoteError);
  Request again;
  EXPECT_EQ(conns[1][0]->postRecv(buf, sizeof(buf), &again).code(), obcclRemoteError);
  EXPECT_EQ(conns[1][0]->progress().code(), obcclRemoteError);
}

TEST(ShmTransport, BadMagicIsARemoteError) {
  auto conns = connectFull(2);
  FrameHeader bad = makeHeader(1, 0);
  bad.magic = 0x12345678;
  Request send, recv;
  ASSERT_TRUE(conns[0][0]->postSend(bad, nullptr, &send).isOk());
  ASSERT_TRUE(drive({conns[0][0].get()}, {&send}).isOk());
  ASSERT_TRUE(conns[1][0]->postRecv(nullptr, 0, &recv).isOk());
  Status s = conns[1][0]->progress();
  EXPECT_EQ(s.code(), obcclRemoteError);
  EXPECT_NE(s.message().find("bad magic"), std::string::npos) << s.message();
}

TEST(ShmTransport, OversizePayloadIsInvalidUsageAndTheConnectionSurvives) {
  EnvVar ring("OBCCL_SHM_RING_BYTES", "65536");
  auto conns = connectFull(2);
  auto big = pattern(1 << 20, 1);  // larger than the ring: its rejection must drain it
  auto small = pattern(100, 2);
  runRanks(2, [&](int r) {
    Connection* c = conns[r][0].get();
    if (r == 0) {
      Request a, b;
      FrameHeader h1 = makeHeader(1, big.size()), h2 = makeHeader(2, small.size());
      ASSERT_TRUE(c->postSend(h1, big.data(), &a).isOk());
      ASSERT_TRUE(c->postSend(h2, small.data(), &b).isOk());
      Status s = drive({c}, {&a, &b});
      ASSERT_TRUE(s.isOk()) << s.message();
      return;
    }
    std::vector<uint8_t> buf(1000);
    Request a, b;
    ASSERT_TRUE(c->postRecv(buf.data(), 10, &a).isOk());
    ASSERT_TRUE(c->postRecv(buf.data(), buf.size(), &b).isOk());
    Status s = drive({c}, {&a, &b});
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(a.status.code(), obcclInvalidUsage);
    EXPECT_NE(a.status.message().find("1048576-byte payload"), std::string::npos)
        << a.status.message();
    EXPECT_NE(a.status.message().find("holds 10 bytes"), std::string::npos);
    ASSERT_TRUE(b.status.isOk()) << b.status.message();
    EXPECT_EQ(b.header.seq, 2u);
    EXPECT_EQ(std::memcmp(buf.data(), small.data(), small.size()), 0);
  });
}

TEST(ShmTransport, ClosedPeerFailsPendingReceive) {
  auto conns = connectFull(2);
  // Frames sent before the close are still delivered.
  uint8_t payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  Request send;
  FrameHeader h = makeHeader(5, sizeof(payload));
  ASSERT_TRUE(conns[0][0]->postSend(h, payload, &send).isOk());
  ASSERT_TRUE(drive({conns[0][0].get()}, {&send}).isOk());
  conns[0][0].reset();
  uint8_t buf[8];
  Request first, second;
  ASSERT_TRUE(conns[1][0]->postRecv(buf, sizeof(buf), &first).isOk());
  ASSERT_TRUE(conns[1][0]->postRecv(buf, sizeof(buf), &second).isOk());
  Status s = drive({conns[1][0].get()}, {&first, &second});
  EXPECT_TRUE(first.done && first.status.isOk()) << first.status.message();
  EXPECT_EQ(s.code(), obcclRemoteError);
  EXPECT_NE(s.message().find("shm to rank 0 (pid " + std::to_string(getpid()) +
                             "): the peer closed the connection"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(second.done);
  EXPECT_EQ(second.status.code(), obcclRemoteError);
}

TEST(ShmTransport, DoorbellWakesASleepingPeer) {
  // Ping-pong where each side sleeps in poll() (10 s cap) as soon as it has nothing to do: a
  // single lost wake-up would take 10 s.
  auto conns = connectFull(2);
  constexpr int kRounds = 300;
  auto start = std::chrono::steady_clock::now();
  runRanks(2, [&](int r) {
    Connection* c = conns[r][0].get();
    uint64_t value = 0;
    for (int i = 0; i < kRounds; ++i) {
      Request req;
      if ((i % 2) == r) {
        FrameHeader h = makeHeader(i, sizeof(value));
        ASSERT_TRUE(c->postSend(h, &value, &req).isOk());
      } else {
        ASSERT_TRUE(c->postRecv(&value, sizeof(value), &req).isOk());
      }
      Status s = drive({c}, {&req}, /*spins=*/0, /*maxPollMs=*/10000);
      ASSERT_TRUE(s.isOk()) << s.message();
      if ((i % 2) != r) {
        ASSERT_EQ(value, static_cast<uint64_t>(i));
      }
      value = i + 1;
    }
  });
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
}

TEST(ShmTransport, DoorbellWakesWhenAReceiveOutlivesASend) {
  // Each side posts its send and the receive of the reply together and sleeps as soon as the
  // send is out: progress() moved bytes but must still leave the doorbell armed.
  auto conns = connectFull(2);
  constexpr int kRounds = 300;
  auto start = std::chrono::steady_clock::now();
  runRanks(2, [&](int r) {
    Connection* c = conns[r][0].get();
    uint64_t out = 0, in = 0;
    for (int i = 0; i < kRounds; ++i) {
      Request send, recv;
      out = i * 2 + r;
      FrameHeader h = makeHeader(i, sizeof(out));
      ASSERT_TRUE(c->postSend(h, &out, &send).isOk());
      ASSERT_TRUE(c->postRecv(&in, sizeof(in), &recv).isOk());
      Status s = drive({c}, {&send, &recv}, /*spins=*/0, /*maxPollMs=*/10000);
      ASSERT_TRUE(s.isOk()) << s.message();
      ASSERT_EQ(in, static_cast<uint64_t>(i * 2 + 1 - r));
    }
  });
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
}

TEST(ShmTransport, InvalidPeerListFailsEveryRank) {
  std::vector<Status> status;
  auto conns = connectAll(
      3,
      [](int r) {
        return r == 1 ? std::vector<int>{0, 7} : allButMe(r, 3);
      },
      &status);
  EXPECT_EQ(status[1].code(), obcclInvalidUsage);
  EXPECT_NE(status[1].message().find("rank 7"), std::string::npos) << status[1].message();
  for (int r : {0, 2}) {
    EXPECT_EQ(status[r].code(), obcclRemoteError);
    EXPECT_NE(status[r].message().find("rank 1 failed"), std::string::npos) << status[r].message();
  }
  EXPECT_TRUE(ourShmNames().empty());
}

TEST(ShmTransport, AsymmetricPeerListsFailWithoutLeaks) {
  std::vector<Status> status;
  auto conns = connectAll(
      2, [](int r) { return r == 0 ? std::vector<int>{1} : std::vector<int>{}; }, &status);
  EXPECT_FALSE(status[0].isOk());
  EXPECT_EQ(status[1].code(), obcclRemoteError) << status[1].message();
  EXPECT_TRUE(ourShmNames().empty());
}

TEST(ShmTransport, BadRingSizeIsInvalidArgument) {
  EnvVar ring("OBCCL_SHM_RING_BYTES", "100000");
  std::vector<Status> status;
  connectAll(
      2, [](int r) { return allButMe(r, 2); }, &status);
  for (const Status& s : status) {
    EXPECT_EQ(s.code(), obcclInvalidArgument);
    EXPECT_NE(s.message().find("OBCCL_SHM_RING_BYTES"), std::string::npos) << s.message();
  }
}

TEST(ShmTransport, EmptyPeerListStillTakesPart) {
  std::vector<Status> status;
  auto conns = connectAll(
      3, [](int r) { return std::vector<int>{}; }, &status);
  for (const Status& s : status) EXPECT_TRUE(s.isOk()) << s.message();
  for (const auto& c : conns) EXPECT_TRUE(c.empty());
}

}  // namespace
}  // namespace obccl::transport
