// The job: fork and exec every rank, then one poll loop over a signalfd (signals to forward,
// SIGCHLD) and the ranks' output pipes, with deadlines for --timeout and the SIGKILL grace.
#include "tools/obcclrun/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

#include "tools/obcclrun/output.h"

namespace obccl::run {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
constexpr size_t kSecretBytes = 32;  // 256 bits; the library wants at least 128
// After the last rank ended, how long we still wait for output from processes it left behind.
constexpr auto kDrainLimit = std::chrono::seconds(2);

struct Rank {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  int exitStatus = 0;                       // obcclrun's convention: exit code, or 128 + signal
  std::unique_ptr<LineForwarder> out, err;  // with --tag-output
};

int statusOf(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 1;
}

std::string describeEnd(int wstatus) {
  if (WIFSIGNALED(wstatus)) {
    int sig = WTERMSIG(wstatus);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(wstatus));
}

std::string secondsText(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", s);
  return buf;
}

int msUntil(Clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(ms > 1 << 30 ? 1 << 30 : ms + 1);
}

class Job {
 public:
  explicit Job(const Options& o) : opt_(o) {}
  ~Job() {
    if (sigfd_ >= 0) ::close(sigfd_);
  }
  Status start();
  int wait();

 private:
  Status blockSignals();
  Status spawn(Rank* r, const std::vector<std::string>& env);
  void childExec(Rank* r, const std::vector<std::string>& env, int outFd, int errFd, int execErrFd);
  void onSignal(int sig);
  void reap();
  void forward(int sig);
  void stopAll(int sig, const std::string& why);
  int running() const;
  int pollTimeoutMs() const;
  void note(const std::string& msg) const { std::fprintf(stderr, "obcclrun: %s\n", msg.c_str()); }

  Options opt_;
  std::vector<Rank> ranks_;
  sigset_t oldMask_{};
  int sigfd_ = -1;
  std::optional<int> firstFailure_;  // exit status to return
  bool timedOut_ = false;
  bool stopping_ = false;
  std::optional<Clock::time_point> jobDeadline_, killDeadline_, drainDeadline_;
};

Status Job::blockSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : kForwardedSignals) sigaddset(&mask, s);
  sigaddset(&mask, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &mask, &oldMask_) != 0) return errnoStatus("sigprocmask", errno);
  sigfd_ = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd_ < 0) return errnoStatus("signalfd", errno);
  // A closed stdout must not kill the launcher while ranks still run.
  signal(SIGPIPE, SIG_IGN);
  return Status::ok();
}

Status Job::start() {
  OBCCL_TRY(blockSignals());
  OBCCL_ASSIGN_OR_RETURN(std::string secret, makeSecretHex(kSecretBytes));
  OBCCL_ASSIGN_OR_RETURN(int port, reserveLoopbackPort());
  const std::string root = "127.0.0.1:" + std::to_string(port);
  std::vector<std::string> env = {"OBCCL_WORLD_SIZE=" + std::to_string(opt_.nranks),
                                  "OBCCL_LOCAL_SIZE=" + std::to_string(opt_.nranks),
                                  "OBCCL_ROOT=" + root, "OBCCL_SECRET=" + secret};
  // Every rank is on this machine, so loopback is the interface that reaches them all.
  const char* ifname = std::getenv("OBCCL_SOCKET_IFNAME");
  if (ifname == nullptr || *ifname == '\0') env.push_back("OBCCL_SOCKET_IFNAME=lo");
  if (opt_.verbose)
    note("starting " + std::to_string(opt_.nranks) + " ranks of '" + opt_.command[0] +
         "', OBCCL_ROOT=" + root);
  if (opt_.timeoutSec > 0)
    jobDeadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(opt_.timeoutSec));
  ranks_.resize(opt_.nranks);
  for (int r = 0; r < opt_.nranks; ++r) {
    ranks_[r].rank = r;
    Status s = spawn(&ranks_[r], env);
    if (!s.isOk()) {
      stopAll(SIGTERM, "");
      return s;
    }
  }
  return Status::ok();
}

void Job::childExec(Rank* r, const std::vector<std::string>& env, int outFd, int errFd,
                    int execErrFd) {
  // Own process group, so stopping a rank also stops whatever it started.
  setpgid(0, 0);
  sigprocmask(SIG_SETMASK, &oldMask_, nullptr);
  signal(SIGPIPE, SIG_DFL);
  int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  if (outFd >= 0) dup2(outFd, STDOUT_FILENO);
  if (errFd >= 0) dup2(errFd, STDERR_FILENO);
  for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
  std::string rank = std::to_string(r->rank);
  setenv("OBCCL_RANK", rank.c_str(), 1);
  setenv("OBCCL_LOCAL_RANK", rank.c_str(), 1);
  std::vector<char*> argv;
  for (const auto& a : opt_.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  int err = errno;
  (void)!::write(execErrFd, &err, sizeof(err));
  _exit(127);
}

Status Job::spawn(Rank* r, const std::vector<std::string>& env) {
  int outPipe[2] = {-1, -1}, errPipe[2] = {-1, -1}, execPipe[2];
  if (opt_.tagOutput && (pipe2(outPipe, O_CLOEXEC) != 0 || pipe2(errPipe, O_CLOEXEC) != 0))
    return errnoStatus("pipe for the output of rank " + std::to_string(r->rank), errno);
  if (pipe2(execPipe, O_CLOEXEC) != 0) return errnoStatus("pipe", errno);
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid < 0) return errnoStatus("fork for rank " + std::to_string(r->rank), errno);
  if (pid == 0) childExec(r, env, outPipe[1], errPipe[1], execPipe[1]);
  setpgid(pid, pid);  // also here, so killpg works even before the child ran
  r->pid = pid;
  r->running = true;
  ::close(execPipe[1]);
  if (opt_.tagOutput) {
    ::close(outPipe[1]);
    ::close(errPipe[1]);
    std::string prefix = "[" + std::to_string(r->rank) + "] ";
    r->out = std::make_unique<LineForwarder>(outPipe[0], STDOUT_FILENO, prefix);
    r->err = std::make_unique<LineForwarder>(errPipe[0], STDERR_FILENO, prefix);
  }
  int err = 0;
  ssize_t n;
  do {
    n = ::read(execPipe[0], &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  ::close(execPipe[0]);
  if (n == static_cast<ssize_t>(sizeof(err)))
    return errnoStatus("cannot execute '" + opt_.command[0] + "'", err);
  return Status::ok();
}

int Job::running() const {
  int n = 0;
  for (const auto& r : ranks_) n += r.running;
  return n;
}

void Job::forward(int sig) {
  for (auto& r : ranks_)
    if (r.running && killpg(r.pid, sig) != 0) kill(r.pid, sig);
}

void Job::stopAll(int sig, const std::string& why) {
  if (!why.empty()) note(why);
  forward(sig);
  if (sig != SIGKILL && !killDeadline_)
    killDeadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(opt_.graceSec));
  stopping_ = true;
}

void Job::reap() {
  for (;;) {
    int ws = 0;
    pid_t pid = waitpid(-1, &ws, WNOHANG);
    if (pid <= 0) return;
    for (auto& r : ranks_) {
      if (r.pid != pid || !r.running) continue;
      r.running = false;
      r.exitStatus = statusOf(ws);
      bool failed = r.exitStatus != 0;
      if (opt_.verbose || (failed && !firstFailure_ && !stopping_))
        note("rank " + std::to_string(r.rank) + " (pid " + std::to_string(pid) + ") " +
             describeEnd(ws));
      if (failed && !firstFailure_) {
        firstFailure_ = r.exitStatus;
        if (running() > 0 && !stopping_)
          stopAll(SIGTERM, "stopping the other " + std::to_string(running()) + " rank(s)");
      }
    }
  }
}

void Job::onSignal(int sig) {
  if (sig == SIGCHLD) {
    reap();
    return;
  }
  if (opt_.verbose) note(std::string("forwarding ") + strsignal(sig) + " to every rank");
  if (sig == SIGUSR1 || sig == SIGUSR2) {
    forward(sig);
    return;
  }
  // The other forwarded signals end the job: ranks that ignore them get SIGKILL after the grace
  // period, and a second interrupt while they are stopping means now.
  bool again = stopping_ && (sig == SIGINT || sig == SIGTERM);
  stopAll(again ? SIGKILL : sig, "");
}

int Job::pollTimeoutMs() const {
  int ms = -1;
  for (const auto& d : {jobDeadline_, killDeadline_, drainDeadline_})
    if (d) ms = ms < 0 ? msUntil(*d) : std::min(ms, msUntil(*d));
  return ms;
}

int Job::wait() {
  for (;;) {
    std::vector<pollfd> fds = {{sigfd_, POLLIN, 0}};
    std::vector<LineForwarder*> fwd;
    for (auto& r : ranks_)
      for (auto* f : {&r.out, &r.err})
        if (*f && (*f)->open()) {
          fds.push_back({(*f)->fd(), POLLIN, 0});
          fwd.push_back(f->get());
        }
    if (running() == 0) {
      if (fwd.empty()) break;
      if (!drainDeadline_) drainDeadline_ = Clock::now() + kDrainLimit;
      if (Clock::now() >= *drainDeadline_) break;  // a leftover process keeps a pipe open
    }
    int n = ::poll(fds.data(), fds.size(), pollTimeoutMs());
    if (n < 0 && errno != EINTR) {
      note(std::string("poll: ") + std::strerror(errno));
      stopAll(SIGKILL, "");
      break;
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si;
      while (::read(sigfd_, &si, sizeof(si)) == static_cast<ssize_t>(sizeof(si)))
        onSignal(static_cast<int>(si.ssi_signo));
    }
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents) fwd[i - 1]->readAvailable();
    auto now = Clock::now();
    if (jobDeadline_ && now >= *jobDeadline_ && !timedOut_ && running() > 0) {
      timedOut_ = true;
      stopAll(SIGTERM, "the job ran past --timeout " + secondsText(opt_.timeoutSec) +
                           " s; stopping " + std::to_string(running()) + " rank(s)");
    }
    if (killDeadline_ && now >= *killDeadline_ && running() > 0) {
      note("sending SIGKILL to " + std::to_string(running()) + " rank(s) that did not stop");
      stopAll(SIGKILL, "");
      killDeadline_.reset();
    }
  }
  for (auto& r : ranks_)
    for (auto* f : {&r.out, &r.err})
      if (*f) (*f)->flush();
  if (timedOut_) return kTimeoutExitStatus;
  return firstFailure_.value_or(0);
}

}  // namespace

int runJob(const Options& options) {
  Job job(options);
  Status s = job.start();
  if (!s.isOk()) {
    std::fprintf(stderr, "obcclrun: %s\n", s.message().c_str());
    job.wait();
    return s.code() == obcclSystemError && s.message().find("cannot execute") == 0
               ? 127
               : kLauncherErrorStatus;
  }
  return job.wait();
}

}  // namespace obccl::run
