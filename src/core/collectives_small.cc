// Latency-bound algorithms: recursive doubling allreduce, binomial broadcast, pairwise alltoall
// and the dissemination barrier. One frame per message.
#include <cstring>

#include "core/algorithms.h"
#include "core/reduce.h"

namespace obccl::core {
namespace {

int mod(int x, int n) { return ((x % n) + n) % n; }

}  // namespace

// Recursive doubling with the usual fold for a count of ranks that is not a power of two: the
// first 2 * rem ranks pair up, the odd one of each pair takes part for both, and hands the result
// back at the end. Each exchange computes op(lower rank's data, higher rank's data), so both
// partners hold bitwise identical values after every step.
Status recursiveDoublingAllReduce(Comm& comm, const Group& g, const void* send, void* recv,
                                  size_t count, obcclDataType_t dt, obcclRedOp_t op) {
  const int n = g.size(), r = g.index;
  const size_t bytes = count * dataTypeSize(dt);
  uint8_t* acc = static_cast<uint8_t*>(recv);
  if (send != recv) std::memcpy(acc, send, bytes);
  uint8_t* tmp = comm.scratch(kScratchCore0, bytes);
  const obcclRedOp_t stepOp = op == obcclAvg ? obcclSum : op;
  int p = 1;
  while (p * 2 <= n) p *= 2;
  const int rem = n - p;
  int vr;  // rank among the p ranks that run the doubling, -1 when folded away
  Transfer a, b;
  if (r < 2 * rem) {
    if (r % 2 == 0) {
      OBCCL_TRY(comm.postSend(g.ranks[r + 1], acc, bytes, &a, 0));
      OBCCL_TRY(comm.waitAll({&a}, "recursive doubling fold"));
      vr = -1;
    } else {
      OBCCL_TRY(comm.postRecv(g.ranks[r - 1], tmp, bytes, &a, 0));
      OBCCL_TRY(comm.waitAll({&a}, "recursive doubling fold"));
      reduce(acc, tmp, acc, count, dt, stepOp);
      vr = r / 2;
    }
  } else {
    vr = r - rem;
  }
  if (vr >= 0) {
    uint32_t step = 1;
    for (int mask = 1; mask < p; mask <<= 1, ++step) {
      int pv = vr ^ mask;
      int partner = pv < rem ? pv * 2 + 1 : pv + rem;
      OBCCL_TRY(comm.postRecv(g.ranks[partner], tmp, bytes, &a, step));
      OBCCL_TRY(comm.postSend(g.ranks[partner], acc, bytes, &b, step));
      OBCCL_TRY(comm.waitAll({&a, &b}, "recursive doubling step " + std::to_string(step)));
      if (partner < r) {
        reduce(acc, tmp, acc, count, dt, stepOp);
      } else {
        reduce(acc, acc, tmp, count, dt, stepOp);
      }
    }
    if (op == obcclAvg) divideBy(acc, acc, count, dt, n);
  }
  if (r < 2 * rem) {
    if (r % 2 == 1) {
      OBCCL_TRY(comm.postSend(g.ranks[r - 1], acc, bytes, &a, 99));
    } else {
      OBCCL_TRY(comm.postRecv(g.ranks[r + 1], acc, bytes, &a, 99));
    }
    OBCCL_TRY(comm.waitAll({&a}, "recursive doubling unfold"));
  }
  return Status::ok();
}

Status binomialBroadcast(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                         obcclDataType_t dt, int root) {
  const int n = g.size(), r = g.index;
  const size_t bytes = count * dataTypeSize(dt);
  const int v = mod(r - root, n);
  if (v == 0 && send != recv) std::memcpy(recv, send, bytes);
  int mask = 1;
  while (mask < n) {
    if (v & mask) {
      Transfer t;
      OBCCL_TRY(comm.postRecv(g.ranks[mod(r - mask, n)], recv, bytes, &t, 0));
      OBCCL_TRY(comm.waitAll({&t}, "binomial broadcast receive"));
      break;
    }
    mask <<= 1;
  }
  std::vector<Transfer> sends;
  sends.reserve(32);
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (v + mask < n) {
      sends.emplace_back();
      OBCCL_TRY(comm.postSend(g.ranks[mod(r + mask, n)], recv, bytes, &sends.back(), 1));
    }
  }
  return comm.waitAll(sends, "binomial broadcast send");
}

// Every block goes out at once; the transports interleave them. In place, the outgoing blocks
// are copied first so that arriving blocks cannot overwrite data not yet sent.
Status pairwiseAllToAll(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                        obcclDataType_t dt) {
  const int n = g.size(), r = g.index;
  const size_t bytes = count * dataTypeSize(dt);
  const uint8_t* in = static_cast<const uint8_t*>(send);
  uint8_t* out = static_cast<uint8_t*>(recv);
  if (send == recv) {
    uint8_t* copy = comm.scratch(kScratchCore1, bytes * n);
    std::memcpy(copy, in, bytes * n);
    in = copy;
  } else {
    std::memcpy(out + r * bytes, in + r * bytes, bytes);
  }
  std::vector<Transfer> ts(2 * (n - 1));
  for (int s = 1; s < n; ++s) {
    int to = mod(r + s, n), from = mod(r - s, n);
    OBCCL_TRY(comm.postRecv(g.ranks[from], out + from * bytes, bytes, &ts[2 * (s - 1)], s));
    OBCCL_TRY(comm.postSend(g.ranks[to], in + to * bytes, bytes, &ts[2 * (s - 1) + 1], s));
  }
  return comm.waitAll(ts, "alltoall");
}

Status disseminationBarrier(Comm& comm, const Group& g) {
  const int n = g.size(), r = g.index;
  uint32_t step = 0;
  for (int d = 1; d < n; d <<= 1, ++step) {
    Transfer a, b;
    OBCCL_TRY(comm.postRecv(g.ranks[mod(r - d, n)], nullptr, 0, &a, step));
    OBCCL_TRY(comm.postSend(g.ranks[mod(r + d, n)], nullptr, 0, &b, step));
    OBCCL_TRY(comm.waitAll({&a, &b}, "barrier round " + std::to_string(step)));
  }
  return Status::ok();
}

}  // namespace obccl::core
