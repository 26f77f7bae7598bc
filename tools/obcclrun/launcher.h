// obcclrun: starts N ranks of a program on this machine with the environment that
// obcclCommInitFromEnv reads, forwards signals to them, and ends the job when one rank fails.
#pragma once

#include <string>
#include <vector>

#include "util/status.h"

namespace obccl::run {

struct Options {
  int nranks = 0;
  double timeoutSec = 0;   // whole-job wall-clock limit; 0: none
  double graceSec = 5;     // between SIGTERM and SIGKILL when ranks are stopped
  bool tagOutput = false;  // prefix every output line with "[rank] "
  bool verbose = false;    // print the job's environment and each rank's end
  std::vector<std::string> command;
};

// Exit status of obcclrun when --timeout expires (the convention of timeout(1)).
constexpr int kTimeoutExitStatus = 124;
// Exit status when the launcher itself fails (bad arguments, cannot start a rank).
constexpr int kLauncherErrorStatus = 125;
constexpr int kMaxRanks = 4096;

// Parses the command line; *help is set for -h/--help (then the Options are empty).
Result<Options> parseOptions(int argc, char** argv, bool* help);
const char* usageText();

// Runs the job to completion. Returns the first failing rank's status (its exit code, or
// 128 + signal number), kTimeoutExitStatus after --timeout, else 0.
int runJob(const Options& options);

// A fresh random job secret: `bytes` bytes from OpenSSL's RAND_bytes, as lowercase hex.
Result<std::string> makeSecretHex(size_t bytes);
// A loopback TCP port that is free now and that the kernel will not hand out again for about a
// minute (see port.cc), for rank 0's bootstrap listener.
Result<int> reserveLoopbackPort();

}  // namespace obccl::run
