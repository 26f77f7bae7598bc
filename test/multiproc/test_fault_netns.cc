// A black-holed link between emulated hosts: two network namespaces joined by a bridge
// (test/netns/netns.sh), ranks entering them with setns() right after fork, a job of
// allreduces and compressed allreduces over tcp, and then `ip link set eth0 down` inside one
// namespace. Every rank must fail within timeoutMs + 1 s of its call's start, naming a rank on
// the other side of the dead link with its 198.18.0.x address, and none may hang.
// Needs root (network namespaces); skips with the reason otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "multiproc/support/fault_comm.h"

namespace obccl_fault {
namespace {

constexpr int kTimeoutMs = 1500;

std::string netnsScript() {
  std::string file = __FILE__;
  return file.substr(0, file.rfind("/multiproc/")) + "/netns/netns.sh";
}

// The namespace set of this test: created in the constructor, removed in the destructor.
class Hosts {
 public:
  explicit Hosts(int k) : prefix_("obrely" + std::to_string(getpid() % 100000)) {
    env_ = "OBCCL_NETNS_PREFIX=" + prefix_ + " ";
    int rc = system(
        (env_ + "bash " + netnsScript() + " check >/tmp/" + prefix_ + ".check 2>&1").c_str());
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
      why_ = "network namespaces cannot be made here (netns.sh check exit " +
             std::to_string(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1) + ")";
      return;
    }
    rc = system(
        (env_ + "bash " + netnsScript() + " up " + std::to_string(k) + " >/dev/null").c_str());
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
      why_ = "netns.sh up failed";
      return;
    }
    up_ = true;
  }
  ~Hosts() {
    if (up_) (void)system((env_ + "bash " + netnsScript() + " down >/dev/null 2>&1").c_str());
  }
  bool up() const { return up_; }
  const std::string& why() const { return why_; }
  std::string ns(int host) const { return prefix_ + "-h" + std::to_string(host); }
  static std::string addr(int host) { return "198.18.0." + std::to_string(host + 1); }
  int run(const std::string& cmd) const { return system(cmd.c_str()); }

 private:
  std::string prefix_;
  std::string env_;
  std::string why_;
  bool up_ = false;
};

// Moves this (single-threaded, freshly forked) process into namespace ns.
bool enterNamespace(const std::string& ns) {
  int fd = open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = setns(fd, CLONE_NEWNET) == 0;
  close(fd);
  return ok;
}

struct NetnsCase {
  int hosts;
  int ranksPerHost;
};

class FaultNetns : public ::testing::TestWithParam<NetnsCase> {};

TEST_P(FaultNetns, BlackHoledLinkFailsEveryRankNamingAPeerAcrossIt) {
  const NetnsCase& c = GetParam();
  Hosts hosts(c.hosts);
  if (!hosts.up()) GTEST_SKIP() << hosts.why();
  int n = c.hosts * c.ranksPerHost;
  Shared<Arena> a;
  LoopOptions o;
  o.transports = "tcp";
  o.nranks = n;
  o.timeoutMs = kTimeoutMs;
  o.idRank = 0;
  o.count = 20000;
  o.compressedEvery = 2;
  o.maxRunMs = 30000;
  ProcSet ps;
  for (int r = 0; r < n; ++r) {
    int host = r / c.ranksPerHost;
    ps.spawn([&, r, host] {
      if (!enterNamespace(hosts.ns(host))) return 7;
      // Ranks of one namespace share the kernel's host id; tell obccl they are different hosts.
      setenv("OBCCL_HOST_ID", ("emulated-host-" + std::to_string(host)).c_str(), 1);
      return runRank(a.get(), r, o);
    });
  }
  a->go.store(1);
  ASSERT_TRUE(waitFor(
      [&] {
        for (int r = 0; r < n; ++r)
          if (a->rank[r].iters.load() < 3 && a->rank[r].stage.load() < kFailed) return false;
        return true;
      },
      60000))
      << "the job never got going: " << a->rank[0].msg;
  int cut = c.hosts - 1;  // the last host loses its link
  int64_t cutNs = nowNs();
  ASSERT_EQ(hosts.run("ip -n " + hosts.ns(cut) + " link set eth0 down"), 0);
  std::vector<ChildExit> ex = ps.waitAll(kTimeoutMs + 15000);
  for (int r = 0; r < n; ++r) {
    const RankReport& s = a->rank[r];
    int host = r / c.ranksPerHost;
    std::string other = Hosts::addr(host == cut ? 0 : cut);
    double fromCall = msBetween(s.callStartNs.load(), s.errNs);
    std::printf(
        "FAULT_NETNS hosts=%d ranks=%d rank=%d rc=%s from_call_ms=%.1f from_cut_ms=%.1f | "
        "%s\n",
        c.hosts, n, r, resultName(s.rc).c_str(), fromCall, msBetween(cutNs, s.errNs), s.msg);
    EXPECT_FALSE(ex[r].hung) << "rank " << r << " hung";
    EXPECT_TRUE(ex[r].ok()) << "rank " << r << " " << ex[r].describe();
    ASSERT_GE(s.stage.load(), kFailed) << "rank " << r << " never failed";
    EXPECT_NE(s.rc, obcclSuccess);
    EXPECT_LE(fromCall, kTimeoutMs + 1000.0) << "rank " << r << ": " << s.msg;
    EXPECT_NE(std::string(s.msg).find(other), std::string::npos)
        << "rank " << r << " names no rank across the dead link (" << other << "): " << s.msg;
    EXPECT_EQ(s.wrong, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, FaultNetns, ::testing::Values(NetnsCase{2, 1}, NetnsCase{2, 2}),
                         [](const ::testing::TestParamInfo<NetnsCase>& info) {
                           return std::to_string(info.param.hosts) + "hosts_x" +
                                  std::to_string(info.param.ranksPerHost);
                         });

}  // namespace
}  // namespace obccl_fault
