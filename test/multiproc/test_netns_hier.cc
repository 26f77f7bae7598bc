// The hierarchical compressed allreduce on emulated hosts: two network namespaces joined by veth
// links and a bridge (test/netns/netns.sh), two rank processes in each, started with
// `ip netns exec` as this test binary re-executed in rank mode. Each namespace has its own
// OBCCL_HOST_ID (the hostname is the same in both), the bootstrap and data listeners bind the
// namespace's eth0 (OBCCL_SOCKET_IFNAME), so host detection, transport selection (shm inside a
// host, tcp or ucx across) and the hierarchy all run for real. Each rank checks its results
// against the reference composition bit for bit; the parent checks the transports the ranks
// logged and the bytes that crossed the emulated hosts' links.
//
// Needs root (network namespaces); skips with the reason otherwise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "multiproc/test_launcher_process.h"
#include "multirank/test_hier_harness.h"

namespace obccl_test {
namespace {

constexpr const char* kChildVar = "OBCCL_NETNS_HIER_CHILD";
constexpr const char* kSecret = "0f1e2d3c4b5a69788796a5b4c3d2e1f00123456789abcdef";
constexpr int kRootPort = 29517;    // free: the namespaces are fresh
constexpr double kJobSeconds = 20;  // per job; a job normally takes 1-3 s
constexpr int kHosts = 2, kPerHost = 2;

// ---- Rank mode: runs in the children, before main ------------------------------------------

// Deterministic input of (rank, call, i) in [-1, 1), so every rank can compute every input.
float inputOf(int rank, int call, size_t i) {
  uint64_t z = i * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(rank) * 0xbf58476d1ce4e5b9ull +
               static_cast<uint64_t>(call) * 0x94d049bb133111ebull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<int64_t>(z >> 40) - (int64_t{1} << 23)) / 8388608.0f;
}

long envLong(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

uint64_t txBytes() {
  std::ifstream in("/sys/class/net/eth0/statistics/tx_bytes");
  uint64_t v = 0;
  in >> v;
  return v;
}

#define CHILD_CHECK(cond, ...)                              \
  do {                                                      \
    if (!(cond)) {                                          \
      std::fprintf(stderr, "NETNS rank %d FAILED: ", rank); \
      std::fprintf(stderr, __VA_ARGS__);                    \
      std::fprintf(stderr, "\n");                           \
      return 1;                                             \
    }                                                       \
  } while (0)

// The reference of one job: hierarchical composition or flat section 4.
struct ChildReference {
  bool hier;
  HostLayout layout;
  std::unique_ptr<HierReference> h;
  OnebitLayout flat;
  OnebitErrors flatErrors;

  ChildReference(bool hierarchical, const HostLayout& l, size_t count)
      : hier(hierarchical), layout(l) {
    if (hier) {
      h = std::make_unique<HierReference>(l, count, 0);
    } else {
      flat = onebitLayout(count, l.nranks(), 0);
      flatErrors = OnebitErrors::zero(flat);
    }
  }
  std::vector<float> step(const std::vector<std::vector<float>>& x) {
    if (hier) return h->step(x);
    return onebitStep(flat, x, &flatErrors, OnebitArithmetic::kExact).y;
  }
  const std::vector<float>& worker(int r) const {
    return hier ? h->worker(r) : flatErrors.worker[r];
  }
  const std::vector<float>& server(int r) const {
    return hier ? h->server(r) : flatErrors.server[r];
  }
};

// One call on every rank with inputs of `call`; with a reference, rank-local checks against it
// (every rank simulates every rank).
int childCall(obcclComm_t comm, int rank, int n, int call, size_t count, ChildReference* ref,
              std::vector<float>* e, std::vector<float>* s) {
  std::vector<std::vector<float>> x(n);
  for (int r = 0; r < n; ++r) {
    if (r != rank && ref == nullptr) continue;
    x[r].resize(count);
    for (size_t i = 0; i < count; ++i) x[r][i] = inputOf(r, call, i);
  }
  std::vector<float> out(count, -7.0f);
  obcclResult_t rc = obcclCompressedAllReduce(x[rank].data(), out.data(), count, obcclFloat32,
                                              e->data(), s->data(), comm, nullptr);
  CHILD_CHECK(rc == obcclSuccess, "call %d: %s", call, obcclGetLastError(comm));
  if (ref == nullptr) return 0;
  std::vector<float> want = ref->step(x);
  CHILD_CHECK(std::memcmp(out.data(), want.data(), count * 4) == 0,
              "call %d: output differs from the reference", call);
  CHILD_CHECK(firstBitDifference(*e, ref->worker(rank)) == -1, "call %d: worker error", call);
  CHILD_CHECK(firstBitDifference(*s, ref->server(rank)) == -1, "call %d: server error", call);
  return 0;
}

// Rank 3 plants a NaN: every rank must fail with obcclInvalidArgument naming rank 3 and keep
// its error buffers.
int childNaNCall(obcclComm_t comm, int rank, size_t count, std::vector<float>* e,
                 std::vector<float>* s) {
  std::vector<float> x(count, 0.5f), out(count, 0.0f);
  if (rank == 3) x[count / 3] = std::nanf("");
  const std::vector<float> e0 = *e, s0 = *s;
  obcclResult_t rc = obcclCompressedAllReduce(x.data(), out.data(), count, obcclFloat32, e->data(),
                                              s->data(), comm, nullptr);
  CHILD_CHECK(rc == obcclInvalidArgument, "NaN call returned %d", static_cast<int>(rc));
  std::string msg = obcclGetLastError(comm);
  CHILD_CHECK(msg.find("sendbuff holds NaN or Inf on rank(s) 3") != std::string::npos,
              "NaN call message: %s", msg.c_str());
  CHILD_CHECK(*e == e0 && *s == s0, "NaN call changed the error buffers");
  return 0;
}

int childMain() {
  const int rank = static_cast<int>(envLong("OBCCL_RANK", -1));
  const int n = static_cast<int>(envLong("OBCCL_WORLD_SIZE", 0));
  const size_t count = static_cast<size_t>(envLong("OBCCL_NETNS_COUNT", 1000));
  const int calls = static_cast<int>(envLong("OBCCL_NETNS_CALLS", 2));
  const bool hier = envLong("OBCCL_HIERARCHICAL", -1) != 0;
  const bool check = envLong("OBCCL_NETNS_CHECK", 1) != 0;
  HostLayout layout{"netns", {}};
  for (int r = 0; r < n; ++r) layout.hostOf.push_back(r / kPerHost);
  obcclComm_t comm = nullptr;
  obcclResult_t rc = obcclCommInitFromEnv(&comm, nullptr);
  CHILD_CHECK(rc == obcclSuccess, "init: %s", obcclGetLastError(nullptr));
  size_t worker = 0, server = 0;
  CHILD_CHECK(obcclCompressedAllReduceErrorCounts(count, comm, &worker, &server) == obcclSuccess,
              "counts: %s", obcclGetLastError(comm));
  std::unique_ptr<ChildReference> ref;
  if (check) ref = std::make_unique<ChildReference>(hier, layout, count);
  const size_t unit = 8 * static_cast<size_t>(n), padded = (count + unit - 1) / unit * unit;
  const size_t wantWorker = hier ? padded / kPerHost : padded;
  CHILD_CHECK(worker == wantWorker, "worker error count %zu, expected %zu", worker, wantWorker);
  std::vector<float> e(worker, 0.0f), s(server, 0.0f);
  CHILD_CHECK(obcclBarrier(comm) == obcclSuccess, "barrier: %s", obcclGetLastError(comm));
  const uint64_t before = txBytes();
  auto start = std::chrono::steady_clock::now();
  for (int call = 0; call < calls; ++call)
    if (childCall(comm, rank, n, call, count, ref.get(), &e, &s) != 0) return 1;
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHILD_CHECK(obcclBarrier(comm) == obcclSuccess, "barrier: %s", obcclGetLastError(comm));
  const uint64_t after = txBytes();
  if (envLong("OBCCL_NETNS_NAN", 0) != 0) {
    if (childNaNCall(comm, rank, count, &e, &s) != 0) return 1;
    if (childCall(comm, rank, n, calls, count, ref.get(), &e, &s) != 0) return 1;  // still usable
  }
  std::printf("NETNS rank=%d txbytes=%llu seconds=%.6f\n", rank,
              static_cast<unsigned long long>(after - before), seconds);
  std::fflush(stdout);
  CHILD_CHECK(obcclCommDestroy(comm) == obcclSuccess, "destroy");
  return 0;
}

// A child re-executed by the parent runs its rank and exits before gtest starts.
[[maybe_unused]] const bool kIsChild = [] {
  if (std::getenv(kChildVar) == nullptr) return false;
  std::exit(childMain());
}();

// ---- Parent: namespaces, jobs, checks -----------------------------------------------------

std::string netnsScript() {
  if (const char* p = std::getenv("OBCCL_NETNS_SCRIPT")) return p;
  std::string here = __FILE__;  // .../test/multiproc/test_netns_hier.cc
  return here.substr(0, here.rfind("/multiproc/")) + "/netns/netns.sh";
}

// The set of emulated hosts, removed at scope end (also when a test fails half way).
class EmulatedHosts {
 public:
  EmulatedHosts() : prefix_("obh" + std::to_string(::getpid())) {}
  ~EmulatedHosts() {
    if (up_) run({"down"});
  }
  // Empty when the hosts are up; otherwise why not (skip when `unsupported`).
  std::string up(int hosts, bool* unsupported) {
    obccl::testing::ProcessResult check = run({"check"});
    *unsupported = check.status == 77 || check.status == 127;
    if (check.status != 0) return "netns.sh check: " + check.output;
    up_ = true;
    obccl::testing::ProcessResult r = run({"up", std::to_string(hosts)});
    if (r.status != 0) return "netns.sh up failed: " + r.output;
    return "";
  }
  std::string ns(int host) const { return prefix_ + "-h" + std::to_string(host); }
  std::string addr(int host) const { return "198.18.0." + std::to_string(host + 1); }

 private:
  obccl::testing::ProcessResult run(std::vector<std::string> args) {
    args.insert(args.begin(), {"bash", netnsScript()});
    return obccl::testing::runProcess(args, 20, {"OBCCL_NETNS_PREFIX=" + prefix_});
  }
  std::string prefix_;
  bool up_ = false;
};

std::string selfExe() {
  char buf[4096];
  ssize_t len = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return len > 0 ? std::string(buf, static_cast<size_t>(len)) : std::string();
}

struct JobOptions {
  int hierarchical = -1;
  std::string transports = "shm,tcp";
  size_t count = 1000;
  int calls = 2;
  bool nan = false;
  bool check = true;  // ranks compare with the reference (every rank simulates all ranks)
  std::vector<std::string> extraEnv;
};

struct RankOutcome {
  obccl::testing::ProcessResult result;
  uint64_t txBytes = 0;
  double seconds = 0;
};

std::vector<RankOutcome> runJob(const EmulatedHosts& hosts, const JobOptions& o) {
  const int n = kHosts * kPerHost;
  std::vector<std::unique_ptr<obccl::testing::Process>> procs;
  for (int r = 0; r < n; ++r) {
    const int host = r / kPerHost;
    std::vector<std::string> env = {
        std::string(kChildVar) + "=1",
        "OBCCL_RANK=" + std::to_string(r),
        "OBCCL_WORLD_SIZE=" + std::to_string(n),
        "OBCCL_ROOT=" + hosts.addr(0) + ":" + std::to_string(kRootPort),
        std::string("OBCCL_SECRET=") + kSecret,
        "OBCCL_HOST_ID=emulated-host-" + std::to_string(host),
        "OBCCL_SOCKET_IFNAME=eth0",
        "OBCCL_TRANSPORTS=" + o.transports,
        "OBCCL_HIERARCHICAL=" + std::to_string(o.hierarchical),
        "OBCCL_TIMEOUT_MS=20000",
        "OBCCL_DEBUG=INFO",
        "OBCCL_DEBUG_SUBSYS=INIT",
        "OBCCL_NETNS_COUNT=" + std::to_string(o.count),
        "OBCCL_NETNS_CALLS=" + std::to_string(o.calls),
        std::string("OBCCL_NETNS_NAN=") + (o.nan ? "1" : "0"),
        std::string("OBCCL_NETNS_CHECK=") + (o.check ? "1" : "0"),
        "-OBCCL_TOPO_FILE",
        "-OBCCL_ALLOW_UNAUTHENTICATED",
        "-RANK",
        "-WORLD_SIZE",
        "-MASTER_ADDR",
        "-MASTER_PORT",
        "-OMPI_COMM_WORLD_RANK",
        "-OMPI_COMM_WORLD_SIZE",
        "-PMI_RANK",
        "-PMI_SIZE",
        "-SLURM_PROCID",
        "-SLURM_NTASKS",
    };
    env.insert(env.end(), o.extraEnv.begin(), o.extraEnv.end());
    procs.push_back(std::make_unique<obccl::testing::Process>());
    procs.back()->start({"ip", "netns", "exec", hosts.ns(host), selfExe()}, env);
  }
  std::vector<RankOutcome> out(n);
  for (int r = 0; r < n; ++r) {
    out[r].result = procs[r]->wait(kJobSeconds);
    const std::string& text = out[r].result.output;
    size_t at = text.find("NETNS rank=");
    if (at != std::string::npos) {
      unsigned long long tx = 0;
      int rr = -1;
      std::sscanf(text.c_str() + at, "NETNS rank=%d txbytes=%llu seconds=%lf", &rr, &tx,
                  &out[r].seconds);
      out[r].txBytes = tx;
    }
  }
  return out;
}

void expectAllPassed(const std::vector<RankOutcome>& ranks) {
  for (size_t r = 0; r < ranks.size(); ++r) {
    EXPECT_FALSE(ranks[r].result.timedOut) << "rank " << r << ":\n" << ranks[r].result.output;
    EXPECT_EQ(ranks[r].result.status, 0) << "rank " << r << ":\n" << ranks[r].result.output;
    EXPECT_NE(ranks[r].result.output.find("NETNS rank=" + std::to_string(r)), std::string::npos)
        << "rank " << r << " did not finish its calls:\n"
        << ranks[r].result.output;
  }
}

// Each rank's INFO log names the transport chosen for every peer.
void expectTransports(const std::vector<RankOutcome>& ranks, const std::string& across) {
  for (int r = 0; r < static_cast<int>(ranks.size()); ++r) {
    for (int p = 0; p < static_cast<int>(ranks.size()); ++p) {
      if (p == r) continue;
      const std::string want = "rank " + std::to_string(r) + " -> rank " + std::to_string(p) +
                               " via " + (p / kPerHost == r / kPerHost ? "shm" : across);
      EXPECT_NE(ranks[r].result.output.find(want), std::string::npos)
          << "rank " << r << " did not log '" << want << "':\n"
          << ranks[r].result.output;
    }
  }
}

// Bytes that left the hosts' eth0 during the timed calls (local rank 0 of each host reads the
// namespace's counter, which covers both of its ranks).
uint64_t interHostBytes(const std::vector<RankOutcome>& ranks) {
  uint64_t sum = 0;
  for (size_t r = 0; r < ranks.size(); r += kPerHost) sum += ranks[r].txBytes;
  return sum;
}

class NetnsHier : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
    bool unsupported = false;
    std::string why = hosts_.up(kHosts, &unsupported);
    if (!why.empty() && unsupported) GTEST_SKIP() << "network namespaces cannot be made: " << why;
    ASSERT_EQ(why, "");
  }
  EmulatedHosts hosts_;
};

TEST_F(NetnsHier, HierarchyOverShmAndTcpMatchesTheReferenceAndFailsTogether) {
  JobOptions o;
  o.count = 10007;
  o.calls = 3;
  o.nan = true;
  auto ranks = runJob(hosts_, o);
  expectAllPassed(ranks);
  expectTransports(ranks, "tcp");
}

// The hierarchical schedule moves half the flat one's bytes between the hosts (model: flat
// N/4 bytes per host per call, hierarchical N/8, for 2 hosts x 2 ranks).
TEST_F(NetnsHier, HierarchyHalvesTheInterHostBytes) {
  JobOptions o;
  o.count = size_t{1} << 22;  // 16 MiB of fp32
  o.calls = 3;
  o.check = false;  // the other tests check the values
  o.hierarchical = 0;
  auto flat = runJob(hosts_, o);
  expectAllPassed(flat);
  o.hierarchical = 1;
  auto hier = runJob(hosts_, o);
  expectAllPassed(hier);
  if (HasFailure()) return;
  const double model = 2.0 * o.calls * static_cast<double>(o.count) / 4;  // flat, both hosts
  const double f = static_cast<double>(interHostBytes(flat));
  const double h = static_cast<double>(interHostBytes(hier));
  std::printf(
      "inter-host bytes for %d calls of %zu floats: flat %.0f (model %.0f), hierarchical "
      "%.0f (model %.0f), ratio %.3f; seconds flat %.3f, hierarchical %.3f\n",
      o.calls, o.count, f, model, h, model / 2, h / f, flat[0].seconds, hier[0].seconds);
  EXPECT_GT(f, model) << "flat moved less than its payload between the hosts";
  EXPECT_LT(f, model * 1.15) << "flat moved far more than its model";
  EXPECT_GT(h / f, 0.45);
  EXPECT_LT(h / f, 0.56);
}

TEST_F(NetnsHier, HierarchyOverShmAndUcx) {
  JobOptions o;
  o.transports = "shm,ucx";
  o.extraEnv = {"UCX_TLS=tcp", "UCX_NET_DEVICES=eth0"};
  auto ranks = runJob(hosts_, o);
  for (const RankOutcome& r : ranks)
    if (r.result.output.find("ucx") != std::string::npos &&
        r.result.output.find("not built") != std::string::npos)
      GTEST_SKIP() << "UCX is not built into this library";
  expectAllPassed(ranks);
  expectTransports(ranks, "ucx");
}

}  // namespace
}  // namespace obccl_test
