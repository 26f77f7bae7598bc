// OBCCL_TOPO_DUMP_FILE: communicator init writes the rank -> host map (and this host's detected
// topology) once, from rank 0, in the format OBCCL_TOPO_FILE reads back.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "harness.h"

namespace {

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(TopoDump, InitWritesTheMapThatTopoFileReadsBack) {
  std::string dump = "/tmp/obccl-topo-dump-" + std::to_string(getpid()) + ".txt";
  std::remove(dump.c_str());
  ASSERT_EQ(setenv("OBCCL_TOPO_DUMP_FILE", dump.c_str(), 1), 0);
  {
    obccl_test::World w = obccl_test::makeWorld(3, "tcp");
    unsetenv("OBCCL_TOPO_DUMP_FILE");
    ASSERT_TRUE(w.ok()) << w.error;
  }
  std::string text = readFile(dump);
  for (int r = 0; r < 3; ++r)
    EXPECT_NE(text.find("rank " + std::to_string(r) + " host "), std::string::npos) << text;
  EXPECT_NE(text.find("cpus"), std::string::npos) << "detected topology lines missing:\n" << text;

  // The dump loads back as a topo file: a job started with it sees the same single host.
  ASSERT_EQ(setenv("OBCCL_TOPO_FILE", dump.c_str(), 1), 0);
  {
    obccl_test::World w = obccl_test::makeWorld(3, "tcp");
    unsetenv("OBCCL_TOPO_FILE");
    ASSERT_TRUE(w.ok()) << w.error;
  }
  std::remove(dump.c_str());
}

}  // namespace
