#include "util/deadline.h"

#include <algorithm>

namespace obccl {

int Deadline::remainingMs(int cap) const {
  if (at_ == Clock::time_point::max()) return cap;
  // Round up so a wait never returns just before the deadline and spins on a 0 ms poll.
  auto left = std::chrono::ceil<std::chrono::milliseconds>(at_ - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left, cap));
}

}  // namespace obccl
