// Deadline: a point in time after which a wait fails with obcclTimeout. Shared by every layer
// that blocks (sockets, bootstrap, transports, collectives).
#pragma once

#include <chrono>
#include <cstdint>

namespace obccl {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  static Deadline afterMs(int64_t ms) {
    return Deadline(Clock::now() + std::chrono::milliseconds(ms));
  }
  static Deadline never() { return Deadline(Clock::time_point::max()); }
  explicit Deadline(Clock::time_point at) : at_(at) {}
  bool expired() const { return Clock::now() >= at_; }
  // Milliseconds left, clamped to [0, cap]; suitable for poll().
  int remainingMs(int cap = 1 << 30) const;
  Clock::time_point at() const { return at_; }
  // The earlier of two deadlines.
  static Deadline earlier(const Deadline& a, const Deadline& b) { return a.at_ < b.at_ ? a : b; }

 private:
  Clock::time_point at_;
};

}  // namespace obccl
