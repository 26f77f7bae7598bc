// Helpers for tests that run the built tools (obcclrun, obccl_perf, examples) as child
// processes: locate them in the build tree, run one with a deadline, capture its output.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace obccl::testing {

// The build tree's root: test executables live in <build>/test, so it is their parent folder.
inline std::string buildDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string exe(buf, static_cast<size_t>(n));
  std::string dir = exe.substr(0, exe.rfind('/'));
  return dir.substr(0, dir.rfind('/'));
}

// Path of a built program, e.g. builtTool("tools/obcclrun"); $OBCCL_TEST_BUILD_DIR overrides
// the build tree.
inline std::string builtTool(const std::string& relative) {
  const char* dir = std::getenv("OBCCL_TEST_BUILD_DIR");
  return (dir && *dir ? std::string(dir) : buildDir()) + "/" + relative;
}

inline bool isExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

struct ProcessResult {
  int status = -1;        // exit code, 128 + signal, or -1 when it had to be killed
  bool timedOut = false;  // ran past the deadline (then killed)
  std::string output;     // stdout and stderr together
  double seconds = 0;
};

// A started child process whose stdout and stderr go to one pipe.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }

  // Starts argv with this process's environment changed by `env`: "NAME=value" sets, "-NAME"
  // removes.
  bool start(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return false;
    start_ = std::chrono::steady_clock::now();
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::dup2(p[1], 1);
      ::dup2(p[1], 2);
      for (const auto& kv : env) {
        if (!kv.empty() && kv[0] == '-')
          ::unsetenv(kv.c_str() + 1);
        else
          ::putenv(const_cast<char*>(kv.c_str()));
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      _exit(127);
    }
    ::close(p[1]);
    fd_ = p[0];
    ::fcntl(fd_, F_SETFL, O_NONBLOCK);
    return true;
  }

  pid_t pid() const { return pid_; }

  // Waits for the process to end (killing it after `seconds`), collecting its output.
  ProcessResult wait(double seconds) {
    ProcessResult r;
    auto deadline = start_ + std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    int ws = 0;
    bool ended = false;
    while (!ended) {
      drain(&r.output, 50);
      pid_t w = ::waitpid(pid_, &ws, WNOHANG);
      if (w == pid_) {
        ended = true;
      } else if (std::chrono::steady_clock::now() >= deadline) {
        r.timedOut = true;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &ws, 0);
        ended = true;
      }
    }
    pid_ = -1;
    // The output of processes it left behind is not waited for beyond a moment.
    drain(&r.output, 200);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (!r.timedOut)
      r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
    return r;
  }

 private:
  void drain(std::string* out, int timeoutMs) {
    if (eof_) {
      ::usleep(static_cast<useconds_t>(timeoutMs < 10 ? timeoutMs : 10) * 1000);
      return;
    }
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, timeoutMs) <= 0) return;
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd_, buf, sizeof(buf))) > 0) out->append(buf, static_cast<size_t>(n));
    if (n == 0) eof_ = true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  bool eof_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Runs argv to completion with a deadline.
inline ProcessResult runProcess(const std::vector<std::string>& argv, double seconds,
                                const std::vector<std::string>& env = {}) {
  Process p;
  if (!p.start(argv, env)) return ProcessResult{};
  return p.wait(seconds);
}

// A TCP port on 127.0.0.1 that is free at the moment (the kernel's choice for port 0).
inline int freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) ::close(fd);
  return port;
}

// Waits until `path` exists, polling, for at most `seconds`.
inline bool waitForFile(const std::string& path, double seconds) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<long>(seconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    if (::access(path.c_str(), F_OK) == 0) return true;
    ::usleep(10000);
  }
  return false;
}

inline std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh temporary directory, removed with its contents at scope end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/obccl-test-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    path_ = p ? p : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace obccl::testing
