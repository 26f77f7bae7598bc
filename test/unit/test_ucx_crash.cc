// A peer process killed by SIGKILL (no goodbye, no destructors): the survivor's progress()
// reports obcclRemoteError naming it within 2 s. The peer is this test binary re-executed, so it
// starts UCX in a fresh process image rather than a fork of one that already ran UCX.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "unit/test_ucx_harness.h"

extern char** environ;

namespace obccl::transport::ucxtest {
namespace {

constexpr char kChildEnv[] = "OBCCL_TEST_UCX_CRASH_CHILD";
constexpr int kChildFd = 3;

bool writeAll(int fd, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t k = write(fd, b, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool readAll(int fd, void* p, size_t n, int timeoutMs) {
  auto* b = static_cast<uint8_t*>(p);
  Deadline deadline = Deadline::afterMs(timeoutMs);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, deadline.remainingMs()) <= 0) return false;
    ssize_t k = read(fd, b, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// The bootstrap allgather between two processes over a socketpair (equal-length contributions).
Status pairAllgather(int fd, int rank, const std::vector<uint8_t>& mine,
                     std::vector<uint8_t>* all) {
  std::vector<uint8_t> theirs(mine.size());
  if (!writeAll(fd, mine.data(), mine.size()) || !readAll(fd, theirs.data(), theirs.size(), 10000))
    return remoteError("test allgather: peer process went away");
  *all = rank == 0 ? mine : theirs;
  const auto& second = rank == 0 ? theirs : mine;
  all->insert(all->end(), second.begin(), second.end());
  return Status::ok();
}

ConnectContext pairContext(int fd, int rank) {
  ConnectContext ctx;
  ctx.rank = rank;
  ctx.nranks = 2;
  ctx.commId = 0xc7a5ull;
  ctx.secret = testSecret();
  ctx.deadline = Deadline::afterMs(10000);
  ctx.allgather = [fd, rank](const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
    return pairAllgather(fd, rank, mine, all);
  };
  return ctx;
}

// The child: rank 1. Connects, sends frame 0, waits for the parent's word, then dies hard.
int runChild() {
  auto transport = makeUcxTransport();
  std::vector<std::unique_ptr<Connection>> conns;
  if (!transport->connect(pairContext(kChildFd, 1), {0}, &conns).isOk()) return 2;
  std::vector<uint8_t> out(1000);
  fillPattern(out.data(), out.size(), 1, 0, 0);
  Request sreq;
  if (!conns[0]->postSend(makeHeader(0, out.size()), out.data(), &sreq).isOk()) return 3;
  if (!waitRequests({conns[0].get()}, {&sreq}, Deadline::afterMs(10000)).isOk()) return 4;
  char go = 0;
  if (!readAll(kChildFd, &go, 1, 10000)) return 5;
  raise(SIGKILL);
  return 6;
}

// Runs before main() in the re-executed child, so gtest never starts there.
const bool kIsChild = [] {
  if (std::getenv(kChildEnv) != nullptr) _exit(runChild());
  return false;
}();

TEST(UcxCrashTest, KilledPeerProcessFailsTheSurvivorWithin2s) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, sv[1], kChildFd);  // dup2 clears CLOEXEC
  std::vector<std::string> envStore;
  for (char** e = environ; *e; ++e) envStore.emplace_back(*e);
  envStore.emplace_back(std::string(kChildEnv) + "=1");
  std::vector<char*> envp;
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);
  char exe[] = "/proc/self/exe";
  char* argv[] = {exe, nullptr};
  pid_t child = -1;
  int rc = posix_spawn(&child, exe, &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(sv[1]);
  ASSERT_EQ(rc, 0) << std::strerror(rc);

  auto transport = makeUcxTransport();
  std::vector<std::unique_ptr<Connection>> conns;
  Status s = transport->connect(pairContext(sv[0], 0), {1}, &conns);
  if (!s.isOk()) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    close(sv[0]);
    if (!ucxUnavailableReason().empty()) GTEST_SKIP() << "UCX cannot start here";
    FAIL() << s.message();
  }
  Connection* c = conns[0].get();
  std::vector<uint8_t> in(1000);
  Request first, second;
  ASSERT_TRUE(c->postRecv(in.data(), in.size(), &first).isOk());
  s = waitRequests({c}, {&first}, Deadline::afterMs(10000));
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_TRUE(first.status.isOk()) << first.status.message();
  EXPECT_TRUE(checkPattern(in.data(), in.size(), 1, 0, 0));

  ASSERT_TRUE(c->postRecv(in.data(), in.size(), &second).isOk());
  char go = 1;
  ASSERT_TRUE(writeAll(sv[0], &go, 1));
  auto start = std::chrono::steady_clock::now();
  Deadline deadline = Deadline::afterMs(5000);
  while (s.isOk() && !deadline.expired()) {
    pollfd pfd{c->pollFd(), c->pollEvents(), 0};
    poll(&pfd, 1, 100);
    s = c->progress();
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.message();
  EXPECT_LT(seconds, 2.0);
  EXPECT_TRUE(second.done);

  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "child exited with " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  close(sv[0]);
}

}  // namespace
}  // namespace obccl::transport::ucxtest
