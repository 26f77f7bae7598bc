// Forked-process helpers for the fault tests (test_fault_*.cc): ranks run as child processes,
// report through an anonymous shared mapping, and the parent enforces every deadline (a child
// still running at its deadline is SIGKILLed and reported as hung, never waited on forever).
//
// Plain POSIX only: this file is compiled into every multiproc test, some of which do not link
// libobccl. Helpers that call the C API live in fault_comm.h (header-only).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <vector>

namespace obccl_fault {

// CLOCK_MONOTONIC in ns: one clock for every process of the machine, so a kill time taken by
// the parent and an error time taken by a child compare directly.
int64_t nowNs();
double msBetween(int64_t fromNs, int64_t toNs);
void sleepMs(double ms);

// Copies text into a fixed buffer of a shared struct, always terminated.
void copyText(char* dst, size_t size, const std::string& text);

// One T in an anonymous MAP_SHARED mapping, made before fork so that every process sees it.
// T must be valid when zero-filled and constructed in place (atomics, PODs).
void* mapShared(size_t bytes);
void unmapShared(void* p, size_t bytes);
template <typename T>
class Shared {
 public:
  Shared() : p_(new (mapShared(sizeof(T))) T()) {}
  ~Shared() {
    p_->~T();
    unmapShared(p_, sizeof(T));
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  T* operator->() { return p_; }
  T& operator*() { return *p_; }
  T* get() { return p_; }

 private:
  T* p_;
};

// How a child ended.
struct ChildExit {
  bool reaped = false;  // waitpid returned it
  bool hung = false;    // still running at the deadline, then SIGKILLed by the parent
  int code = -1;        // exit code when it exited
  int signal = 0;       // the signal that ended it
  bool ok() const { return reaped && !hung && signal == 0 && code == 0; }
  std::string describe() const;
};

// Children of one test. The destructor SIGKILLs and reaps whatever still runs.
class ProcSet {
 public:
  ProcSet() = default;
  ~ProcSet();
  ProcSet(const ProcSet&) = delete;
  ProcSet& operator=(const ProcSet&) = delete;

  // Forks a child running body(); it _exits with body's return value. alarm(alarmSeconds) is a
  // backstop should the parent itself die. Returns the child's index.
  int spawn(const std::function<int()>& body, int alarmSeconds = 120);
  pid_t pid(int index) const { return pids_[index]; }
  int size() const { return static_cast<int>(pids_.size()); }
  void signal(int index, int sig);
  // Waits for every child until deadlineMs from now; the ones still running are SIGKILLed and
  // marked hung. Children already reaped keep their earlier result.
  std::vector<ChildExit> waitAll(int64_t deadlineMs);
  // Waits for one child; false (and nothing killed) when it is still running at the deadline.
  bool waitOne(int index, int64_t deadlineMs, ChildExit* out);

 private:
  bool reap(int index, bool block);
  std::vector<pid_t> pids_;
  std::vector<ChildExit> exits_;
};

// Polls pred every 100 us until it holds or deadlineMs pass; returns pred's last value.
bool waitFor(const std::function<bool()>& pred, int64_t deadlineMs);

// Process hygiene, read from /proc.
int countOpenFds();             // entries of /proc/self/fd, without the one reading it
std::string describeOpenFds();  // "3 -> socket:[123], ..."
int countThreads();             // entries of /proc/self/task
std::vector<std::string> shmSegments(const std::string& prefix);  // names in /dev/shm
long rssKb(pid_t pid);  // VmRSS of a process, -1 when unreadable

// Integer and double settings from the environment (long forms of the tests raise them).
int envInt(const char* name, int fallback);

// Order statistics of a sample (nearest rank), for the detection-time reports.
double percentile(std::vector<double> values, double p);

}  // namespace obccl_fault
