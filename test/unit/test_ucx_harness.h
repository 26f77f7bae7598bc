// Test harness for the UCX transport: ranks are threads of this process, connected through the
// transport's own connect() with an in-process allgather standing in for the bootstrap.
#pragma once

#include <poll.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "transports/transport.h"
#include "transports/ucx/ucx_transport.h"
#include "transports/ucx/ucx_worker.h"
#include "util/deadline.h"
#include "util/status.h"

namespace obccl::transport::ucxtest {

// Sets (or, with nullopt, clears) an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The bootstrap's allgather for n threads: equal-length contributions, concatenated in rank order.
class ThreadAllgather {
 public:
  explicit ThreadAllgather(int n) : n_(n), slots_(static_cast<size_t>(n)) {}

  Status run(int rank, const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t gen = generation_;
    slots_[static_cast<size_t>(rank)] = mine;
    if (++arrived_ == n_) {
      result_.clear();
      for (const auto& s : slots_) {
        if (s.size() != mine.size()) {
          failed_ = true;  // the contract: every rank contributes the same length
        }
        result_.insert(result_.end(), s.begin(), s.end());
      }
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return generation_ != gen; })) {
      return timeoutError("test allgather: not every rank arrived");
    }
    if (failed_) return invalidUsage("test allgather: contributions of different lengths");
    *all = result_;
    return Status::ok();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool failed_ = false;
  std::vector<std::vector<uint8_t>> slots_;
  std::vector<uint8_t> result_;
};

// Empty when UCX can start here; otherwise why not (the tests then skip).
inline std::string ucxUnavailableReason() {
  auto context = ucx::UcxContext::create(2, true);
  return context.isOk() ? std::string() : context.status().message();
}

// One rank: its transport and its connections, indexed by peer rank (nullptr for itself).
struct Rank {
  std::unique_ptr<Transport> transport;
  std::vector<std::unique_ptr<Connection>> conns;
  Status status;
};

inline ConnectContext makeContext(int rank, int n, ThreadAllgather* ag, std::vector<uint8_t> secret,
                                  int64_t deadlineMs = 20000) {
  ConnectContext ctx;
  ctx.rank = rank;
  ctx.nranks = n;
  ctx.commId = 0x5eed0000c0ffeeull;
  ctx.secret = std::move(secret);
  ctx.deadline = Deadline::afterMs(deadlineMs);
  ctx.allgather = [ag, rank](const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
    return ag->run(rank, mine, all);
  };
  return ctx;
}

inline std::vector<uint8_t> testSecret(uint8_t salt = 0) {
  std::vector<uint8_t> s(32);
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(i * 7 + 3 + salt);
  return s;
}

// The peers of `rank` in a full mesh of n ranks.
inline std::vector<int> allPeers(int rank, int n) {
  std::vector<int> peers;
  for (int p = 0; p < n; ++p) {
    if (p != rank) peers.push_back(p);
  }
  return peers;
}

// Connects n ranks (one thread each), by default in a full mesh. secretOf(rank) lets a test give
// a rank the wrong secret; peersOf(rank) picks its peers.
inline std::vector<Rank> connectMesh(
    int n, int64_t deadlineMs = 20000,
    std::function<std::vector<uint8_t>(int)> secretOf = [](int) { return testSecret(); },
    std::function<std::vector<int>(int)> peersOf = nullptr) {
  std::vector<Rank> ranks(static_cast<size_t>(n));
  ThreadAllgather ag(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      Rank& me = ranks[static_cast<size_t>(r)];
      me.transport = makeUcxTransport();
      std::vector<int> peers = peersOf ? peersOf(r) : allPeers(r, n);
      std::vector<std::unique_ptr<Connection>> out;
      me.status =
          me.transport->connect(makeContext(r, n, &ag, secretOf(r), deadlineMs), peers, &out);
      me.conns.resize(static_cast<size_t>(n));
      for (size_t i = 0; i < out.size(); ++i) {
        me.conns[static_cast<size_t>(peers[i])] = std::move(out[i]);
      }
    });
  }
  for (auto& t : threads) t.join();
  return ranks;
}

// Progresses conns until every request is done, waiting on their poll fds in between, the way the
// core's progress loop does. Returns the first failure, or a timeout naming what was pending.
inline Status waitRequests(const std::vector<Connection*>& conns, const std::vector<Request*>& reqs,
                           const Deadline& deadline) {
  for (;;) {
    for (Connection* c : conns) OBCCL_TRY(c->progress());
    bool all = true;
    for (Request* r : reqs) all = all && r->done;
    if (all) return Status::ok();
    if (deadline.expired()) return timeoutError("test: requests still pending at the deadline");
    std::vector<pollfd> fds;
    for (Connection* c : conns) {
      if (c->pollFd() >= 0) fds.push_back({c->pollFd(), c->pollEvents(), 0});
    }
    if (fds.empty()) {
      std::this_thread::yield();
    } else {
      poll(fds.data(), fds.size(), deadline.remainingMs(100));
    }
  }
}

// Deterministic payload bytes for frame i from `from` to `to` (a xorshift stream, 8 bytes a step).
inline uint64_t patternSeed(int from, int to, uint64_t i) {
  return 0x9e3779b97f4a7c15ull * (i + 1) + static_cast<uint64_t>(from) * 1000003u +
         static_cast<uint64_t>(to) + 1;
}
inline uint64_t patternNext(uint64_t* x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}
inline void fillPattern(uint8_t* p, size_t n, int from, int to, uint64_t i) {
  uint64_t x = patternSeed(from, to, i);
  for (size_t off = 0; off < n; off += 8) {
    uint64_t v = patternNext(&x);
    std::memcpy(p + off, &v, std::min<size_t>(8, n - off));
  }
}
// True when p holds exactly the pattern fillPattern writes.
inline bool checkPattern(const uint8_t* p, size_t n, int from, int to, uint64_t i) {
  uint64_t x = patternSeed(from, to, i);
  for (size_t off = 0; off < n; off += 8) {
    uint64_t v = patternNext(&x);
    if (std::memcmp(p + off, &v, std::min<size_t>(8, n - off)) != 0) return false;
  }
  return true;
}

inline FrameHeader makeHeader(uint64_t seq, uint64_t length, uint32_t step = 0) {
  FrameHeader h;
  h.op = 7;
  h.commId = 0x5eed0000c0ffeeull;
  h.seq = seq;
  h.count = length;
  h.length = length;
  h.step = step;
  sealHeader(&h);
  return h;
}

}  // namespace obccl::transport::ucxtest
