// The rank -> host map: the OBCCL_TOPO_FILE grammar, its errors, derivation and the dump format.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "topo/topology.h"

namespace obccl::topo {
namespace {

std::string parseError(const std::string& text, int nranks) {
  auto r = parseTopoText(text, nranks, "t.txt");
  EXPECT_FALSE(r.isOk()) << "accepted:\n" << text;
  if (r.isOk()) return "";
  EXPECT_EQ(r.status().code(), obcclInvalidArgument);
  return r.status().message();
}

TEST(TopoFile, ParsesRankAndHostStatements) {
  auto r = parseTopoText(
      "# two fake hosts\n"
      "nranks 6\n"
      "rank 0 host a   # trailing comment\n"
      "\n"
      "host b ranks 1,3-5\n"
      "  rank 2 host a\n"
      "detail nic eth0 kind network\n"
      "numa nodes 1 local 0\n",
      6, "t.txt");
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r.value(), (std::vector<std::string>{"a", "b", "a", "b", "b", "b"}));
}

TEST(TopoFile, ErrorsNameTheLine) {
  EXPECT_NE(parseError("rank 0 host a\nrank 9 host b\n", 2).find("t.txt:2: rank 9 is out of range"),
            std::string::npos);
  EXPECT_NE(parseError("rank 0 host a\nrank 0 host b\n", 2).find("t.txt:2: rank 0 is named twice"),
            std::string::npos);
  EXPECT_NE(parseError("\n\nbogus 1 2\n", 1).find("t.txt:3: unknown statement 'bogus'"),
            std::string::npos);
  EXPECT_NE(parseError("rank 0 hots a\n", 1).find("t.txt:1: expected 'rank <r> host <name>'"),
            std::string::npos);
  EXPECT_NE(parseError("host a ranks 0,x\n", 2).find("t.txt:1: bad rank list item 'x'"),
            std::string::npos);
  EXPECT_NE(parseError("host a ranks 3-1\n", 4).find("t.txt:1: bad rank list item '3-1'"),
            std::string::npos);
  EXPECT_NE(parseError("host a ranks -1\n", 4).find("t.txt:1: bad rank list item"),
            std::string::npos);
  EXPECT_NE(parseError("host a\n", 1).find("t.txt:1: expected 'host <name> ranks <list>'"),
            std::string::npos);
  EXPECT_NE(parseError("nranks 3\nhost a ranks 0-1\n", 2).find("t.txt:1: file describes 3 ranks"),
            std::string::npos);
  EXPECT_NE(parseError("nranks many\n", 2).find("t.txt:1: expected 'nranks <n>'"),
            std::string::npos);
}

TEST(TopoFile, EveryRankMustBeNamed) {
  EXPECT_NE(parseError("host a ranks 0,2\n", 3).find("t.txt: rank 1 (of 3) is not given a host"),
            std::string::npos);
  EXPECT_NE(parseError("", 1).find("rank 0 (of 1) is not given a host"), std::string::npos);
}

TEST(TopoFile, MissingFileIsAnError) {
  auto r = loadTopoFile("/nonexistent/obccl-topo.txt", 2);
  ASSERT_FALSE(r.isOk());
  EXPECT_NE(r.status().message().find("/nonexistent/obccl-topo.txt"), std::string::npos);
}

TEST(HostMap, DerivesLocalRanksForUnevenHosts) {
  // Host x holds ranks 0, 2, 5; host y ranks 1, 4; host z rank 3.
  HostMap m = makeHostMap({"x", "y", "x", "z", "y", "x"});
  EXPECT_EQ(m.nranks(), 6);
  EXPECT_EQ(m.nhosts(), 3);
  EXPECT_EQ(m.hosts, (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(m.hostIndex, (std::vector<int>{0, 1, 0, 2, 1, 0}));
  EXPECT_EQ(m.localRank, (std::vector<int>{0, 0, 1, 0, 1, 2}));
  EXPECT_EQ(m.hostRanks, (std::vector<std::vector<int>>{{0, 2, 5}, {1, 4}, {3}}));
  EXPECT_EQ(m.localSize(0), 3);
  EXPECT_EQ(m.localSize(4), 2);
  EXPECT_EQ(m.localSize(3), 1);
  EXPECT_EQ(m.maxLocalSize(), 3);
  EXPECT_EQ(m.minLocalSize(), 1);
  EXPECT_EQ(m.ranksWithLocalRank(0), (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(m.ranksWithLocalRank(1), (std::vector<int>{2, 4}));
  EXPECT_EQ(m.ranksWithLocalRank(2), (std::vector<int>{5}));
  EXPECT_TRUE(m.ranksWithLocalRank(3).empty());
  EXPECT_TRUE(m.sameHost(0, 5));
  EXPECT_FALSE(m.sameHost(0, 1));
}

TEST(HostMap, SingleRankAndEmpty) {
  HostMap one = makeHostMap({"h"});
  EXPECT_EQ(one.nhosts(), 1);
  EXPECT_EQ(one.localRank[0], 0);
  HostMap none = makeHostMap({});
  EXPECT_EQ(none.nhosts(), 0);
  EXPECT_EQ(none.maxLocalSize(), 0);
  EXPECT_EQ(none.minLocalSize(), 0);
}

class TempFile {
 public:
  TempFile() {
    char name[] = "/tmp/obccl-topo-test-XXXXXX";
    int fd = mkstemp(name);
    if (fd >= 0) close(fd);
    path_ = name;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }
  void write(const std::string& text) const { std::ofstream(path_) << text; }

 private:
  std::string path_;
};

TEST(HostMap, TopoFileOverridesGatheredIds) {
  TempFile f;
  f.write("host a ranks 0,1\nhost b ranks 2,3\n");
  std::vector<std::string> gathered(4, localHostId());
  auto m = buildHostMap(gathered, f.path());
  ASSERT_TRUE(m.isOk()) << m.status().message();
  EXPECT_EQ(m.value().nhosts(), 2);
  EXPECT_EQ(m.value().localRank, (std::vector<int>{0, 1, 0, 1}));
  auto plain = buildHostMap(gathered, "");
  ASSERT_TRUE(plain.isOk());
  EXPECT_EQ(plain.value().nhosts(), 1);

  setenv("OBCCL_TOPO_FILE", f.path().c_str(), 1);
  auto viaEnv = buildHostMap(gathered);
  unsetenv("OBCCL_TOPO_FILE");
  ASSERT_TRUE(viaEnv.isOk()) << viaEnv.status().message();
  EXPECT_EQ(viaEnv.value().hostOf, m.value().hostOf);
}

TEST(HostMap, DumpRoundTripsThroughTheParser) {
  auto topo = detectTopology();
  ASSERT_TRUE(topo.isOk()) << topo.status().message();
  HostMap m = makeHostMap({"a", "b", "a"});
  TempFile f;
  ASSERT_TRUE(dumpTopoFile(f.path(), m, &topo.value(), 1).isOk());
  std::ifstream in(f.path());
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("detail hostid " + localHostId()), std::string::npos) << text.str();
  auto back = loadTopoFile(f.path(), 3);
  ASSERT_TRUE(back.isOk()) << back.status().message() << "\n" << text.str();
  EXPECT_EQ(back.value(), m.hostOf);
}

TEST(HostMap, DumpPathExpandsRank) {
  HostMap m = makeHostMap({"a"});
  std::string pattern = "/tmp/obccl-topo-dump-" + std::to_string(getpid()) + "-%r.txt";
  std::string expect = "/tmp/obccl-topo-dump-" + std::to_string(getpid()) + "-7.txt";
  ASSERT_TRUE(dumpTopoFile(pattern, m, nullptr, 7).isOk());
  EXPECT_EQ(access(expect.c_str(), R_OK), 0);
  std::remove(expect.c_str());
}

TEST(HostMap, DumpIfRequestedWritesOncePerPattern) {
  HostMap m = makeHostMap({"a", "a"});
  std::string base = "/tmp/obccl-topo-req-" + std::to_string(getpid());
  unsetenv("OBCCL_TOPO_DUMP_FILE");
  EXPECT_TRUE(dumpTopoIfRequested(m, nullptr, 0).isOk());  // not requested: nothing to do
  setenv("OBCCL_TOPO_DUMP_FILE", (base + ".txt").c_str(), 1);
  EXPECT_TRUE(dumpTopoIfRequested(m, nullptr, 1).isOk());
  EXPECT_NE(access((base + ".txt").c_str(), F_OK), 0) << "only rank 0 writes a shared path";
  EXPECT_TRUE(dumpTopoIfRequested(m, nullptr, 0).isOk());
  auto back = loadTopoFile(base + ".txt", 2);
  ASSERT_TRUE(back.isOk()) << back.status().message();
  EXPECT_EQ(back.value(), m.hostOf);
  setenv("OBCCL_TOPO_DUMP_FILE", (base + "-%r.txt").c_str(), 1);
  EXPECT_TRUE(dumpTopoIfRequested(m, nullptr, 1).isOk());
  EXPECT_EQ(access((base + "-1.txt").c_str(), F_OK), 0);
  setenv("OBCCL_TOPO_DUMP_FILE", "/nonexistent-dir/x.txt", 1);
  Status s = dumpTopoIfRequested(m, nullptr, 0);
  EXPECT_EQ(s.code(), obcclSystemError);
  EXPECT_NE(s.message().find("/nonexistent-dir/x.txt"), std::string::npos) << s.message();
  unsetenv("OBCCL_TOPO_DUMP_FILE");
  std::remove((base + ".txt").c_str());
  std::remove((base + "-1.txt").c_str());
}

TEST(HostId, HasHostnameAndBootIdAndHonoursOverride) {
  unsetenv("OBCCL_HOST_ID");
  std::string id = localHostId();
  EXPECT_EQ(id.rfind(hostName() + ":", 0), 0u) << id;
  EXPECT_GT(id.size(), hostName().size() + 8) << id;
  setenv("OBCCL_HOST_ID", "fakehost-3", 1);
  EXPECT_EQ(localHostId(), "fakehost-3");
  unsetenv("OBCCL_HOST_ID");
  EXPECT_EQ(localHostId(), id);
}

}  // namespace
}  // namespace obccl::topo
