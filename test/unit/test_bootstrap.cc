// Bootstrap: the unique id, the root service and the client, with ranks as threads.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "bootstrap/bootstrap.h"
#include "util/auth.h"
#include "util/log.h"

namespace obccl::bootstrap {
namespace {

using Ms = std::chrono::milliseconds;

RootServiceOptions testOptions() {
  RootServiceOptions o;
  o.joinTimeoutMs = 10000;
  o.handshakeTimeoutMs = 2000;
  o.ifname = "=lo";
  return o;
}

// Waits until the root services started by a test have exited.
bool rootServicesDrainTo(int count, int timeoutMs = 5000) {
  Deadline d = Deadline::afterMs(timeoutMs);
  while (activeRootServices() > count) {
    if (d.expired()) return false;
    std::this_thread::sleep_for(Ms(10));
  }
  return true;
}

std::vector<uint8_t> contribution(int rank, int round) {
  std::vector<uint8_t> v(static_cast<size_t>((rank * 37 + round * 101) % 300));
  if (round == 2) v.resize(rank == 0 ? 70000 : 0);  // one large, the rest empty
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(rank + round * 7 + i);
  return v;
}

TEST(UniqueId, RoundTrips) {
  UniqueIdData d;
  d.root = SocketAddress::parse("[2001:db8::7]:4567").value();
  d.secret.resize(kSecretBytes);
  for (size_t i = 0; i < kSecretBytes; ++i) d.secret[i] = static_cast<uint8_t>(i * 7 + 1);
  d.commId = 0x0123456789abcdefull;
  obcclUniqueId id = encodeUniqueId(d);
  auto back = decodeUniqueId(id);
  ASSERT_TRUE(back.isOk()) << back.status().message();
  EXPECT_EQ(back.value().root, d.root);
  EXPECT_EQ(back.value().secret, d.secret);
  EXPECT_EQ(back.value().commId, d.commId);
}

TEST(UniqueId, AnyFlippedByteIsRejected) {
  UniqueIdData d;
  d.root = SocketAddress::parse("198.18.0.1:29500").value();
  d.secret.assign(kSecretBytes, 0x5a);
  d.commId = 99;
  obcclUniqueId id = encodeUniqueId(d);
  for (size_t i = 0; i < sizeof(id.internal); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      obcclUniqueId bad = id;
      bad.internal[i] = static_cast<char>(bad.internal[i] ^ mask);
      auto r = decodeUniqueId(bad);
      ASSERT_FALSE(r.isOk()) << "byte " << i << " mask " << int(mask);
      EXPECT_EQ(r.status().code(), obcclInvalidArgument);
    }
  }
  obcclUniqueId zero{};
  EXPECT_EQ(decodeUniqueId(zero).status().code(), obcclInvalidArgument);
}

TEST(UniqueId, CreateMakesFreshSecretsAndAKernelPort) {
  int before = activeRootServices();
  auto a = createUniqueId(testOptions());
  auto b = createUniqueId(testOptions());
  ASSERT_TRUE(a.isOk() && b.isOk()) << a.status().message();
  EXPECT_NE(a.value().secret, b.value().secret);
  EXPECT_NE(a.value().commId, b.value().commId);
  EXPECT_NE(a.value().root.port(), 0);
  EXPECT_NE(a.value().root, b.value().root);
  EXPECT_EQ(activeRootServices(), before + 2);
  // Let both services finish: one rank each joins and leaves.
  for (auto* d : {&a.value(), &b.value()}) {
    auto bs = Bootstrap::connect(*d, 0, 1, Deadline::afterMs(5000));
    ASSERT_TRUE(bs.isOk()) << bs.status().message();
  }
  EXPECT_TRUE(rootServicesDrainTo(before));
}

// Every rank runs fn(rank) in its own thread; returns the statuses in rank order.
std::vector<Status> runRanks(int n, const std::function<Status(int)>& fn) {
  std::vector<std::future<Status>> f;
  for (int r = 0; r < n; ++r) f.push_back(std::async(std::launch::async, fn, r));
  std::vector<Status> out;
  for (auto& x : f) out.push_back(x.get());
  return out;
}

class BootstrapRanks : public ::testing::TestWithParam<int> {};

TEST_P(BootstrapRanks, AllgathersOfDifferentLengthsAndBarrier) {
  const int n = GetParam();
  int before = activeRootServices();
  auto id = createUniqueId(testOptions());
  ASSERT_TRUE(id.isOk()) << id.status().message();
  auto statuses = runRanks(n, [&](int rank) -> Status {
    Deadline d = Deadline::afterMs(20000);
    OBCCL_ASSIGN_OR_RETURN(auto bs, Bootstrap::connect(id.value(), rank, n, d));
    if (bs->rank() != rank || bs->nranks() != n) return internalError("rank/nranks");
    if (!bs->localAddress().isLoopback()) return internalError("local address not loopback");
    for (int round = 0; round < 4; ++round) {
      std::vector<std::vector<uint8_t>> all;
      OBCCL_TRY(bs->allgather(contribution(rank, round), &all, d));
      if (static_cast<int>(all.size()) != n) return internalError("wrong part count");
      for (int r = 0; r < n; ++r)
        if (all[r] != contribution(r, round))
          return internalError("round " + std::to_string(round) + ": wrong bytes from rank " +
                               std::to_string(r));
    }
    return bs->barrier(d);
  });
  for (int r = 0; r < n; ++r) EXPECT_TRUE(statuses[r].isOk()) << r << ": " << statuses[r].message();
  EXPECT_TRUE(rootServicesDrainTo(before));
}

INSTANTIATE_TEST_SUITE_P(Ranks, BootstrapRanks, ::testing::Values(1, 2, 5, 8));

TEST(Bootstrap, RejectsBadArguments) {
  UniqueIdData d;
  d.root = SocketAddress::parse("127.0.0.1:1").value();
  d.secret.assign(kSecretBytes, 1);
  EXPECT_EQ(Bootstrap::connect(d, 2, 2, Deadline::afterMs(100)).status().code(),
            obcclInvalidArgument);
  EXPECT_EQ(Bootstrap::connect(d, 0, 0, Deadline::afterMs(100)).status().code(),
            obcclInvalidArgument);
}

TEST(Bootstrap, NranksDisagreementFailsEveryRank) {
  int before = activeRootServices();
  auto id = createUniqueId(testOptions());
  ASSERT_TRUE(id.isOk());
  auto statuses = runRanks(2, [&](int rank) -> Status {
    return Bootstrap::connect(id.value(), rank, rank == 0 ? 2 : 3, Deadline::afterMs(10000))
        .status();
  });
  for (const Status& s : statuses) {
    EXPECT_EQ(s.code(), obcclInvalidUsage) << s.message();
    EXPECT_NE(s.message().find("disagree"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(rootServicesDrainTo(before));
}

TEST(Bootstrap, DuplicateRankFailsEveryJoinedRank) {
  int before = activeRootServices();
  auto id = createUniqueId(testOptions());
  ASSERT_TRUE(id.isOk());
  auto statuses = runRanks(2, [&](int) -> Status {
    return Bootstrap::connect(id.value(), 0, 2, Deadline::afterMs(10000)).status();
  });
  for (const Status& s : statuses) {
    EXPECT_EQ(s.code(), obcclInvalidUsage) << s.message();
    EXPECT_NE(s.message().find("rank 0 joined twice"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(rootServicesDrainTo(before));
}

// Captures WARN lines while alive.
class LogCapture {
 public:
  LogCapture() {
    old_ = setLogHandler([this](LogLevel, unsigned, const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back(line);
    });
  }
  ~LogCapture() { setLogHandler(old_); }
  std::string all() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }

 private:
  LogHandler old_;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

TEST(Bootstrap, StrangersDoNotDisturbTheJob) {
  LogCapture logs;
  int before = activeRootServices();
  RootServiceOptions opts = testOptions();
  opts.handshakeTimeoutMs = 300;
  auto id = createUniqueId(opts);
  ASSERT_TRUE(id.isOk());
  const SocketAddress& root = id.value().root;
  Deadline d = Deadline::afterMs(10000);
  // A stalled connection, one that sends garbage, one that closes early, and one with the
  // wrong secret, while the first ranks are joining.
  auto stalled = connectTo(root, d);
  auto garbage = connectTo(root, d);
  auto early = connectTo(root, d);
  ASSERT_TRUE(stalled.isOk() && garbage.isOk() && early.isOk());
  std::vector<uint8_t> junk(kAuthHelloBytes, 'x');
  ASSERT_TRUE(writeFull(garbage.value().get(), junk.data(), junk.size(), d, "root").isOk());
  ASSERT_TRUE(writeFull(early.value().get(), junk.data(), 5, d, "root").isOk());
  early.value().reset();
  UniqueIdData wrong = id.value();
  wrong.secret[0] ^= 1;
  auto impostor = std::async(std::launch::async, [&] {
    return Bootstrap::connect(wrong, 1, 3, Deadline::afterMs(5000)).status();
  });
  auto rankFn = [&](int rank) -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto bs, Bootstrap::connect(id.value(), rank, 3, d));
    std::vector<std::vector<uint8_t>> all;
    OBCCL_TRY(bs->allgather({static_cast<uint8_t>(rank)}, &all, d));
    return bs->barrier(d);
  };
  auto first = std::async(std::launch::async, [&] { return runRanks(2, rankFn); });
  // The stalled connection is dropped while the job waits: we read the root's hello, then EOF.
  uint8_t hello[kAuthHelloBytes];
  EXPECT_TRUE(readFull(stalled.value().get(), hello, sizeof(hello), d, "root").isOk());
  uint8_t more;
  Status eof = readFull(stalled.value().get(), &more, 1, Deadline::afterMs(3000), "root");
  EXPECT_EQ(eof.code(), obcclRemoteError) << eof.message();
  // The last rank arrives after that, and the job completes.
  Status last = rankFn(2);
  EXPECT_TRUE(last.isOk()) << last.message();
  for (const Status& s : first.get()) EXPECT_TRUE(s.isOk()) << s.message();
  Status imp = impostor.get();
  EXPECT_EQ(imp.code(), obcclRemoteError) << imp.message();
  EXPECT_TRUE(rootServicesDrainTo(before));
  std::string warnings = logs.all();
  auto local = localAddressOf(stalled.value().get()).value();
  EXPECT_NE(warnings.find(local.toString() + ": stalled for 300 ms"), std::string::npos)
      << warnings;
  EXPECT_NE(warnings.find("bad magic"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("went away before joining"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("secret"), std::string::npos) << warnings;
}

TEST(Bootstrap, RankLeavingMidAllgatherFailsTheOthers) {
  int before = activeRootServices();
  auto id = createUniqueId(testOptions());
  ASSERT_TRUE(id.isOk());
  Deadline d = Deadline::afterMs(10000);
  auto start = std::chrono::steady_clock::now();
  auto statuses = runRanks(3, [&](int rank) -> Status {
    OBCCL_ASSIGN_OR_RETURN(auto bs, Bootstrap::connect(id.value(), rank, 3, d));
    std::vector<std::vector<uint8_t>> all;
    OBCCL_TRY(bs->allgather({1, 2, 3}, &all, d));
    if (rank == 2) return Status::ok();  // leaves: its Bootstrap is destroyed here
    return bs->allgather({4}, &all, d);
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(statuses[2].isOk());
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(statuses[r].code(), obcclRemoteError) << statuses[r].message();
    EXPECT_NE(statuses[r].message().find("rank 2"), std::string::npos) << statuses[r].message();
  }
  EXPECT_TRUE(rootServicesDrainTo(before));
}

TEST(Bootstrap, AbortUnblocksAPendingAllgather) {
  int before = activeRootServices();
  auto id = createUniqueId(testOptions());
  ASSERT_TRUE(id.isOk());
  std::promise<void> rank0Done;
  auto other = std::async(std::launch::async, [&] {
    // Rank 1 joins but never calls allgather until rank 0 is done.
    auto bs = Bootstrap::connect(id.value(), 1, 2, Deadline::afterMs(10000));
    rank0Done.get_future().wait();
    return bs.status();
  });
  auto bs = Bootstrap::connect(id.value(), 0, 2, Deadline::afterMs(10000));
  ASSERT_TRUE(bs.isOk()) << bs.status().message();
  Bootstrap* b = bs.value().get();
  std::thread aborter([b] {
    std::this_thread::sleep_for(Ms(200));
    b->abort();
  });
  auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<uint8_t>> all;
  Status s = b->allgather({1}, &all, Deadline::afterMs(30000));
  auto waited = std::chrono::steady_clock::now() - start;
  aborter.join();
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_NE(s.message().find("aborted"), std::string::npos) << s.message();
  EXPECT_LT(waited, std::chrono::seconds(1));
  // Sticky afterwards.
  EXPECT_FALSE(b->barrier(Deadline::afterMs(100)).isOk());
  rank0Done.set_value();
  EXPECT_TRUE(other.get().isOk());
  bs.value().reset();
  EXPECT_TRUE(rootServicesDrainTo(before));
}

TEST(Bootstrap, CancelUnblocksAPendingConnect) {
  int before = activeRootServices();
  RootServiceOptions opts = testOptions();
  opts.joinTimeoutMs = 1000;
  auto id = createUniqueId(opts);
  ASSERT_TRUE(id.isOk());
  std::atomic<bool> cancel{false};
  std::thread t([&] {
    std::this_thread::sleep_for(Ms(200));
    cancel = true;
  });
  auto start = std::chrono::steady_clock::now();
  auto bs = Bootstrap::connect(id.value(), 0, 2, Deadline::afterMs(30000), &cancel);
  t.join();
  EXPECT_FALSE(bs.isOk());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_TRUE(rootServicesDrainTo(before));
}

TEST(Bootstrap, MissingRankTimesOutAtTheJoinDeadline) {
  int before = activeRootServices();
  RootServiceOptions opts = testOptions();
  opts.joinTimeoutMs = 300;
  auto id = createUniqueId(opts);
  ASSERT_TRUE(id.isOk());
  auto bs = Bootstrap::connect(id.value(), 0, 2, Deadline::afterMs(10000));
  EXPECT_EQ(bs.status().code(), obcclTimeout) << bs.status().message();
  EXPECT_NE(bs.status().message().find("missing ranks: 1"), std::string::npos)
      << bs.status().message();
  EXPECT_TRUE(rootServicesDrainTo(before));
}

TEST(Bootstrap, FixedAddressRootThatStartsLate) {
  int before = activeRootServices();
  SocketAddress free;
  { ASSERT_TRUE(listenOn(SocketAddress::parse("127.0.0.1:0").value(), &free).isOk()); }
  UniqueIdData data;
  data.root = free;
  data.secret.assign(kSecretBytes, 0x42);
  data.commId = 7;
  // Ranks start first and retry until the root appears.
  auto ranks = std::async(std::launch::async, [&] {
    return runRanks(2, [&](int rank) -> Status {
      Deadline d = Deadline::afterMs(10000);
      OBCCL_ASSIGN_OR_RETURN(auto bs, Bootstrap::connect(data, rank, 2, d));
      return bs->barrier(d);
    });
  });
  std::this_thread::sleep_for(Ms(200));
  ASSERT_TRUE(startRootService(data, testOptions()).isOk());
  for (const Status& s : ranks.get()) EXPECT_TRUE(s.isOk()) << s.message();
  EXPECT_TRUE(rootServicesDrainTo(before));
}

}  // namespace
}  // namespace obccl::bootstrap
