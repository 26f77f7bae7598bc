// Multirank test harness: one thread per rank in this process, each making its communicator
// through the public C API (libobccl.so), with a hard deadline on everything a test waits for.
// Header-only, so that it links against the shared library and nothing else.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "obccl/obccl.h"

namespace obccl_test {

constexpr int kDefaultDeadlineMs = 60000;

// Runs fn(rank) on one thread per rank and returns the results in rank order. If a thread is
// still running at the deadline, the test fails: every communicator in `abortOnHang` is aborted
// (which makes blocked calls return) and, should that not free them, the process exits.
template <typename R>
std::vector<R> runRanks(int n, const std::function<R(int)>& fn,
                        std::vector<obcclComm_t>* abortOnHang = nullptr,
                        int deadlineMs = kDefaultDeadlineMs) {
  std::vector<std::future<R>> futures;
  futures.reserve(n);
  for (int r = 0; r < n; ++r) futures.push_back(std::async(std::launch::async, fn, r));
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadlineMs);
  bool hung = false;
  for (auto& f : futures) hung = hung || f.wait_until(until) != std::future_status::ready;
  if (hung) {
    ADD_FAILURE() << "a rank did not finish within " << deadlineMs << " ms; aborting";
    if (abortOnHang != nullptr) {
      for (obcclComm_t& c : *abortOnHang) {
        if (c != nullptr) obcclCommAbort(c);
        c = nullptr;
      }
    }
    auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (auto& f : futures) {
      if (f.wait_until(grace) != std::future_status::ready) {
        std::fprintf(stderr, "FATAL: a rank thread is stuck even after obcclCommAbort\n");
        std::_Exit(3);
      }
    }
  }
  std::vector<R> out;
  for (auto& f : futures) out.push_back(f.get());
  return out;
}

// A config with the given transports ("tcp", "shm,tcp", ...) and timeout.
inline obcclConfig_t makeConfig(const char* transports, int timeoutMs = 30000) {
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.transports = transports;
  cfg.timeoutMs = timeoutMs;
  return cfg;
}

// n communicators of one job, or the first failure (code and obcclGetLastError text).
struct World {
  std::vector<obcclComm_t> comms;
  obcclResult_t result = obcclSuccess;
  std::string error;

  World() = default;
  World(const World&) = delete;
  World& operator=(const World&) = delete;
  World(World&& o) noexcept : comms(std::move(o.comms)), result(o.result), error(o.error) {
    o.comms.clear();
  }
  World& operator=(World&& o) noexcept {
    if (this != &o) {
      destroy();
      comms = std::move(o.comms);
      o.comms.clear();
      result = o.result;
      error = o.error;
    }
    return *this;
  }
  ~World() { destroy(); }

  bool ok() const { return result == obcclSuccess; }
  int size() const { return static_cast<int>(comms.size()); }
  obcclComm_t operator[](int r) const { return comms[r]; }
  // Destroys every communicator (each on its own thread: teardown may talk to peers).
  void destroy() {
    if (comms.empty()) return;
    std::vector<obcclComm_t> cs = comms;
    comms.clear();
    runRanks<int>(static_cast<int>(cs.size()), [&](int r) {
      if (cs[r] != nullptr) obcclCommDestroy(cs[r]);
      return 0;
    });
  }
};

// Creates n ranks' communicators over `transports`; on failure the World says why.
inline World makeWorld(int n, const char* transports, int timeoutMs = 30000) {
  World w;
  obcclUniqueId id;
  w.result = obcclGetUniqueId(&id);
  if (w.result != obcclSuccess) {
    w.error = obcclGetLastError(nullptr);
    return w;
  }
  std::vector<std::string> errors(n);
  std::vector<obcclComm_t> comms(n, nullptr);
  obcclConfig_t cfg = makeConfig(transports, timeoutMs);
  auto rcs = runRanks<obcclResult_t>(n, [&](int r) {
    obcclResult_t rc = obcclCommInitRankConfig(&comms[r], n, id, r, &cfg);
    if (rc != obcclSuccess) errors[r] = obcclGetLastError(nullptr);
    return rc;
  });
  w.comms = comms;
  for (int r = 0; r < n; ++r) {
    if (rcs[r] != obcclSuccess && w.ok()) {
      w.result = rcs[r];
      w.error = "rank " + std::to_string(r) + ": " + errors[r];
    }
  }
  if (!w.ok()) {
    for (obcclComm_t& c : w.comms)
      if (c != nullptr) obcclCommDestroy(c), c = nullptr;
    w.comms.clear();
  }
  return w;
}

// True when an init failure means the transport is not available here (not built, or it cannot
// reach the peers on this machine): the test is then skipped with the reason.
inline bool transportUnavailable(const World& w) {
  return w.result == obcclInvalidArgument &&
         (w.error.find("none built") != std::string::npos ||
          w.error.find("no transport can reach") != std::string::npos);
}

}  // namespace obccl_test

// Makes a World or skips/fails the test.
#define OBCCL_MAKE_WORLD(var, n, transports)                                       \
  obccl_test::World var = obccl_test::makeWorld((n), (transports));                \
  if (obccl_test::transportUnavailable(var))                                       \
    GTEST_SKIP() << "transport " << (transports) << " unavailable: " << var.error; \
  ASSERT_TRUE(var.ok()) << "init over " << (transports) << " failed: " << var.error
