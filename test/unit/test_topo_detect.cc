// hwloc detection: runs on any machine and finds this process's CPUs and NUMA node(s).
#include <gtest/gtest.h>
#include <sched.h>

#include "topo/topology.h"

namespace obccl::topo {
namespace {

TEST(TopoDetect, FindsCoresAndThisProcessCpus) {
  auto r = detectTopology();
  ASSERT_TRUE(r.isOk()) << r.status().message();
  const Topology& t = r.value();
  EXPECT_GE(t.coreCount, 1);
  EXPECT_GE(t.puCount, t.coreCount);
  EXPECT_GE(t.numaNodeCount, 1);
  EXPECT_FALSE(t.boundCpus.empty());
  EXPECT_LE(static_cast<int>(t.boundCpus.size()), t.puCount);
  // The cpus hwloc says we may use are the ones the kernel says we may use.
  cpu_set_t mask;
  ASSERT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  EXPECT_EQ(static_cast<int>(t.boundCpus.size()), CPU_COUNT(&mask));
  for (int cpu : t.boundCpus) EXPECT_TRUE(CPU_ISSET(cpu, &mask)) << cpu;
  EXPECT_EQ(t.hostId, localHostId());
  if (t.nics.empty()) {
    EXPECT_EQ(t.nearestNic, -1);
  } else {
    ASSERT_GE(t.nearestNic, 0);
    EXPECT_LT(t.nearestNic, static_cast<int>(t.nics.size()));
  }
  for (const NicInfo& n : t.nics) {
    EXPECT_FALSE(n.name.empty());
    EXPECT_TRUE(n.kind == "network" || n.kind == "openfabrics") << n.kind;
  }
}

TEST(TopoDetect, DescribeListsEverything) {
  auto r = detectTopology();
  ASSERT_TRUE(r.isOk()) << r.status().message();
  std::string text = r.value().describe();
  EXPECT_NE(text.find("hostid " + localHostId()), std::string::npos) << text;
  EXPECT_NE(text.find("cpus cores "), std::string::npos) << text;
  EXPECT_NE(text.find("numa nodes "), std::string::npos) << text;
  EXPECT_NE(text.find("nic "), std::string::npos) << text;
  EXPECT_NE(text.find("gpu "), std::string::npos) << text;
}

}  // namespace
}  // namespace obccl::topo
