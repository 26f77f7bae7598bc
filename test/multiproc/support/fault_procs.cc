#include "multiproc/support/fault_procs.h"

#include <dirent.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace obccl_fault {

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double msBetween(int64_t fromNs, int64_t toNs) { return (toNs - fromNs) / 1e6; }

void sleepMs(double ms) {
  if (ms <= 0) return;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ms / 1000);
  ts.tv_nsec = static_cast<long>(std::fmod(ms, 1000.0) * 1e6);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void copyText(char* dst, size_t size, const std::string& text) {
  if (size == 0) return;
  size_t n = std::min(size - 1, text.size());
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}

void* mapShared(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap(MAP_SHARED) for the fault test arena");
    std::abort();
  }
  return p;
}

void unmapShared(void* p, size_t bytes) { munmap(p, bytes); }

std::string ChildExit::describe() const {
  if (hung) return "hung (SIGKILLed by the test at its deadline)";
  if (!reaped) return "not reaped";
  if (signal != 0) return std::string("killed by signal ") + strsignal(signal);
  return "exit code " + std::to_string(code);
}

ProcSet::~ProcSet() {
  for (int i = 0; i < size(); ++i) {
    if (exits_[i].reaped) continue;
    ::kill(pids_[i], SIGKILL);
    reap(i, true);
  }
}

int ProcSet::spawn(const std::function<int()>& body, int alarmSeconds) {
  std::fflush(nullptr);  // nothing buffered may be written twice
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    alarm(alarmSeconds);
    int rc = body();
    std::fflush(nullptr);
    _exit(rc);
  }
  pids_.push_back(pid);
  exits_.emplace_back();
  return size() - 1;
}

void ProcSet::signal(int index, int sig) {
  if (!exits_[index].reaped) ::kill(pids_[index], sig);
}

bool ProcSet::reap(int index, bool block) {
  ChildExit& e = exits_[index];
  if (e.reaped) return true;
  int st = 0;
  pid_t r = waitpid(pids_[index], &st, block ? 0 : WNOHANG);
  if (r != pids_[index]) return false;
  e.reaped = true;
  if (WIFEXITED(st)) e.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) e.signal = WTERMSIG(st);
  return true;
}

std::vector<ChildExit> ProcSet::waitAll(int64_t deadlineMs) {
  int64_t until = nowNs() + deadlineMs * 1000000;
  for (;;) {
    bool all = true;
    for (int i = 0; i < size(); ++i) all = reap(i, false) && all;
    if (all || nowNs() >= until) break;
    usleep(1000);
  }
  for (int i = 0; i < size(); ++i) {
    if (exits_[i].reaped) continue;
    ::kill(pids_[i], SIGCONT);  // a stopped child must be able to die
    ::kill(pids_[i], SIGKILL);
    reap(i, true);
    exits_[i].hung = true;
  }
  return exits_;
}

bool ProcSet::waitOne(int index, int64_t deadlineMs, ChildExit* out) {
  int64_t until = nowNs() + deadlineMs * 1000000;
  while (!reap(index, false)) {
    if (nowNs() >= until) return false;
    usleep(500);
  }
  *out = exits_[index];
  return true;
}

bool waitFor(const std::function<bool()>& pred, int64_t deadlineMs) {
  int64_t until = nowNs() + deadlineMs * 1000000;
  while (!pred()) {
    if (nowNs() >= until) return pred();
    usleep(100);
  }
  return true;
}

namespace {

std::vector<std::string> listDir(const char* path) {
  std::vector<std::string> out;
  if (DIR* d = opendir(path)) {
    while (dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        out.push_back(e->d_name);
    closedir(d);
  }
  return out;
}

}  // namespace

int countOpenFds() { return static_cast<int>(listDir("/proc/self/fd").size()) - 1; }

std::string describeOpenFds() {
  std::string out;
  for (const std::string& name : listDir("/proc/self/fd")) {
    char target[256] = {0};
    std::string link = "/proc/self/fd/" + name;
    ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n < 0) continue;  // the directory's own fd, already closed
    out += (out.empty() ? "" : ", ") + name + " -> " + std::string(target, n);
  }
  return out;
}

int countThreads() { return static_cast<int>(listDir("/proc/self/task").size()); }

std::vector<std::string> shmSegments(const std::string& prefix) {
  std::vector<std::string> out;
  for (const std::string& name : listDir("/dev/shm"))
    if (name.compare(0, prefix.size(), prefix) == 0) out.push_back(name);
  return out;
}

long rssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

int envInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::atoi(v);
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

}  // namespace obccl_fault
