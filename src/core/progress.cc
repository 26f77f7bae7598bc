#include "core/progress.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <thread>

namespace obccl::core {
namespace {

constexpr int kSpinRounds = 2000;  // fd-less transports: busy rounds before sleeping
constexpr int kMaxSleepUs = 1000;  // longest sleep step for fd-less transports
constexpr int kPollCapMs = 1000;   // re-check the deadline at least this often

}  // namespace

Result<std::unique_ptr<Waiter>> Waiter::create() {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return errnoStatus("eventfd for the communicator's abort signal", errno);
  return std::unique_ptr<Waiter>(new Waiter(fd));
}

Waiter::~Waiter() { close(eventFd_); }

void Waiter::abort() {
  aborted_.store(true, std::memory_order_release);
  uint64_t one = 1;
  // The eventfd stays readable (it is never drained), so every later poll wakes at once.
  ssize_t n = write(eventFd_, &one, sizeof(one));
  (void)n;
}

bool Waiter::wait(const std::vector<transport::Connection*>& conns, const Deadline& deadline,
                  int* idleRounds, int extraFd) {
  if (aborted()) return false;
  std::vector<pollfd> fds;
  fds.reserve(conns.size() + 2);
  fds.push_back({eventFd_, POLLIN, 0});
  if (extraFd >= 0) fds.push_back({extraFd, POLLIN, 0});
  bool fdLess = false;
  for (transport::Connection* c : conns) {
    int fd = c->pollFd();
    if (fd < 0) {
      fdLess = true;
    } else {
      fds.push_back({fd, c->pollEvents(), 0});
    }
  }
  int timeoutMs = deadline.remainingMs(kPollCapMs);
  ++*idleRounds;
  if (fdLess) {
    if (*idleRounds < kSpinRounds) {
      std::this_thread::yield();
      return false;
    }
    // Sleep in small steps (growing to kMaxSleepUs) while still watching fds and abort.
    int us = std::min(kMaxSleepUs, 10 * (*idleRounds - kSpinRounds + 1));
    if (fds.size() == 1) {
      std::this_thread::sleep_for(std::chrono::microseconds(us));
      return false;
    }
    timeoutMs = std::min(timeoutMs, us >= 1000 ? 1 : 0);
  }
  int rc = poll(fds.data(), fds.size(), timeoutMs);
  // EINTR or a ready fd: either way the caller progresses and re-checks.
  return rc > 0 && extraFd >= 0 && fds[1].revents != 0;
}

}  // namespace obccl::core
