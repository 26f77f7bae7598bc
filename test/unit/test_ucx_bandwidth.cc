// Loopback throughput of one UCX connection pair, ranks as two threads, measured the way the tcp
// transport's LoopbackThroughput test measures it (one frame in flight, each end waiting on its
// poll fd), so the two can be compared. Skipped unless OBCCL_UCX_BENCH=1; UCX_TLS picks the wire.
//   OBCCL_UCX_BENCH=1 UCX_TLS=tcp build/test/unit_test_ucx_bandwidth
// OBCCL_UCX_BENCH_TOTAL_MIB (default 1024) bytes per frame size; OBCCL_UCX_BENCH_FRAME_MIB runs
// one frame size instead of the sweep 1..64 MiB; OBCCL_UCX_BENCH_BIDIR=1 sends both ways at once.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "unit/test_ucx_harness.h"

namespace obccl::transport::ucxtest {
namespace {

size_t envMiB(const char* name, size_t def) {
  const char* v = std::getenv(name);
  return (v ? std::strtoull(v, nullptr, 10) : def) << 20;
}

// Waits like a rank does (sleeping on the poll fd), or with OBCCL_UCX_BENCH_SPIN=1 by spinning
// on progress(), which shows what the wake-up path costs.
Status waitFor(Connection* c, const std::vector<Request*>& reqs) {
  if (std::getenv("OBCCL_UCX_BENCH_SPIN") == nullptr) {
    return waitRequests({c}, reqs, Deadline::afterMs(60000));
  }
  for (;;) {
    OBCCL_TRY(c->progress());
    bool all = true;
    for (Request* r : reqs) all = all && r->done;
    if (all) return Status::ok();
  }
}

// Sends (or receives) total bytes as frames of `frame` bytes, one at a time.
Status pump(Connection* c, bool send, size_t total, std::vector<uint8_t>* buf) {
  for (size_t done = 0; done < total; done += buf->size()) {
    Request r;
    OBCCL_TRY(send ? c->postSend(makeHeader(done / buf->size(), buf->size()), buf->data(), &r)
                   : c->postRecv(buf->data(), buf->size(), &r));
    OBCCL_TRY(waitFor(c, {&r}));
    OBCCL_TRY(r.status);
  }
  return Status::ok();
}

TEST(UcxBandwidth, LoopbackThroughput) {
  if (std::getenv("OBCCL_UCX_BENCH") == nullptr) GTEST_SKIP() << "set OBCCL_UCX_BENCH=1 to run";
  std::string why = ucxUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << "UCX cannot start here: " << why;
  std::vector<Rank> ranks = connectMesh(2);
  for (auto& r : ranks) ASSERT_TRUE(r.status.isOk()) << r.status.message();
  Connection* a = ranks[0].conns[1].get();
  Connection* b = ranks[1].conns[0].get();
  const size_t total = envMiB("OBCCL_UCX_BENCH_TOTAL_MIB", 1024);
  const bool bidir = std::getenv("OBCCL_UCX_BENCH_BIDIR") != nullptr;
  std::vector<size_t> frames;
  if (std::getenv("OBCCL_UCX_BENCH_FRAME_MIB") != nullptr) {
    frames.push_back(envMiB("OBCCL_UCX_BENCH_FRAME_MIB", 64));
  } else {
    for (size_t mib = 1; mib <= 64; mib *= 2) frames.push_back(mib << 20);
  }
  const char* tls = std::getenv("UCX_TLS");
  std::printf("# ucx loopback, UCX_TLS=%s, %s, %zu MiB per size, lanes: %s\n",
              tls ? tls : "(default)", bidir ? "both ways" : "one way", total >> 20,
              a->describe().c_str());
  std::printf("# %10s %10s %12s\n", "frame_MiB", "seconds", "GB/s");
  for (size_t frame : frames) {
    std::vector<uint8_t> outA(frame, 1), inA(frame), outB(frame, 2), inB(frame);
    Status sa, rb;
    auto start = std::chrono::steady_clock::now();
    // One thread per rank; with bidir a rank's send and receive share its thread, since a
    // worker is driven by one thread at a time.
    std::thread rankB([&] {
      if (!bidir) {
        rb = pump(b, false, total, &inB);
        return;
      }
      for (size_t done = 0; done < total && rb.isOk(); done += frame) {
        Request s, r;
        rb = b->postRecv(inB.data(), frame, &r);
        if (rb.isOk()) rb = b->postSend(makeHeader(done / frame, frame), outB.data(), &s);
        if (rb.isOk()) rb = waitFor(b, {&s, &r});
      }
    });
    if (!bidir) {
      sa = pump(a, true, total, &outA);
    } else {
      for (size_t done = 0; done < total && sa.isOk(); done += frame) {
        Request s, r;
        sa = a->postRecv(inA.data(), frame, &r);
        if (sa.isOk()) sa = a->postSend(makeHeader(done / frame, frame), outA.data(), &s);
        if (sa.isOk()) sa = waitFor(a, {&s, &r});
      }
    }
    rankB.join();
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(sa.isOk()) << sa.message();
    ASSERT_TRUE(rb.isOk()) << rb.message();
    std::printf("  %10zu %10.3f %12.2f\n", frame >> 20, sec, total / sec / 1e9);
  }
}

}  // namespace
}  // namespace obccl::transport::ucxtest
