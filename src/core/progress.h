// The progress engine's waiting half: poll() on the connections' fds plus an eventfd that
// abort() writes, or, for transports without an fd, a short spin followed by small sleeps.
#pragma once

#include <atomic>
#include <vector>

#include "transports/transport.h"
#include "util/deadline.h"
#include "util/status.h"

namespace obccl::core {

class Waiter {
 public:
  static Result<std::unique_ptr<Waiter>> create();
  ~Waiter();
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // Any thread: wakes the current and every later wait.
  void abort();
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  // Blocks until one of conns may progress, abort(), the deadline, or a short cap. *idleRounds
  // counts consecutive waits without progress (the caller resets it when bytes move); it decides
  // between spinning and sleeping for fd-less connections.
  // extraFd (-1: none) is watched too; returns true when it is readable or hung up.
  bool wait(const std::vector<transport::Connection*>& conns, const Deadline& deadline,
            int* idleRounds, int extraFd);

 private:
  explicit Waiter(int eventFd) : eventFd_(eventFd) {}
  int eventFd_;
  std::atomic<bool> aborted_{false};
};

}  // namespace obccl::core
