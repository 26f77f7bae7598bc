// Ring and chain algorithms for large messages, built on runPipeline. Buffers are cut into n
// chunks (the first count % n one element longer) and chunks into segments of
// config().segmentBytes; each segment is one frame.
#include <algorithm>
#include <cstring>

#include "core/algorithms.h"
#include "core/reduce.h"

namespace obccl::core {
namespace {

// Chunk c of count elements split n ways.
struct Chunks {
  size_t count, n;
  size_t start(size_t c) const { return c * (count / n) + std::min(c, count % n); }
  size_t len(size_t c) const { return count / n + (c < count % n ? 1 : 0); }
};

size_t mod(long long x, int n) { return static_cast<size_t>(((x % n) + n) % n); }

size_t segmentElems(const Comm& comm, size_t elemSize) {
  return std::max<size_t>(1, comm.config().segmentBytes / elemSize);
}

// In/out unit bookkeeping: unit (t, k) is segment k of the chunk moved at step t.
struct Steps {
  std::vector<size_t> base;  // index of (t, 0)
  std::vector<OutUnit> outs;
  std::vector<InUnit> ins;
};

}  // namespace

Status ringAllReduce(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                     obcclDataType_t dt, obcclRedOp_t op) {
  const int n = g.size(), r = g.index;
  const size_t es = dataTypeSize(dt), seg = segmentElems(comm, es);
  const Chunks ch{count, static_cast<size_t>(n)};
  const int steps = 2 * (n - 1);
  auto cOut = [&](int t) { return t < n - 1 ? mod(r - t, n) : mod(r + 1 - (t - (n - 1)), n); };
  auto cIn = [&](int t) { return t < n - 1 ? mod(r - t - 1, n) : mod(r - (t - (n - 1)), n); };
  auto nseg = [&](size_t c) { return (ch.len(c) + seg - 1) / seg; };
  const uint8_t* in = static_cast<const uint8_t*>(send);
  uint8_t* out = static_cast<uint8_t*>(recv);

  std::vector<size_t> outBase(steps + 1, 0), inBase(steps + 1, 0);
  for (int t = 0; t < steps; ++t) {
    outBase[t + 1] = outBase[t] + nseg(cOut(t));
    inBase[t + 1] = inBase[t] + nseg(cIn(t));
  }
  std::vector<OutUnit> outs;
  std::vector<InUnit> ins;
  struct Meta {
    int t;
    size_t off, elems;
  };
  std::vector<Meta> meta;
  outs.reserve(outBase[steps]);
  ins.reserve(inBase[steps]);
  meta.reserve(inBase[steps]);
  for (int t = 0; t < steps; ++t) {
    size_t c = cOut(t);
    for (size_t k = 0; k < nseg(c); ++k) {
      size_t off = ch.start(c) + k * seg, elems = std::min(seg, ch.len(c) - k * seg);
      const uint8_t* src = (t == 0 ? in : out) + off * es;
      int64_t after = t == 0 ? -1 : static_cast<int64_t>(inBase[t - 1] + k);
      outs.push_back({src, elems * es, after});
    }
    c = cIn(t);
    for (size_t k = 0; k < nseg(c); ++k) {
      size_t off = ch.start(c) + k * seg, elems = std::min(seg, ch.len(c) - k * seg);
      if (t < n - 1) {
        ins.push_back({nullptr, elems * es, -1});
      } else {
        // The allgather receive overwrites the region this rank sent at reduce-scatter step
        // t - (n - 1); that send must have left first.
        ins.push_back({out + off * es, elems * es, static_cast<int64_t>(outBase[t - (n - 1)] + k)});
      }
      meta.push_back({t, off, elems});
    }
  }
  obcclRedOp_t stepOp = op == obcclAvg ? obcclSum : op;
  ProcessFn process = [&](size_t i, const uint8_t* data) {
    const Meta& m = meta[i];
    if (m.t >= n - 1) return;  // allgather: received in place
    uint8_t* dst = out + m.off * es;
    const uint8_t* mine = in + m.off * es;
    if (op == obcclAvg && m.t == n - 2) {
      reduceDivide(dst, mine, data, m.elems, dt, n);
    } else {
      reduce(dst, mine, data, m.elems, dt, stepOp);
    }
  };
  int left = g.ranks[mod(r - 1, n)], right = g.ranks[mod(r + 1, n)];
  return runPipeline(comm, right, left, outs, ins, seg * es, process, "ring allreduce");
}

Status ringAllGather(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                     obcclDataType_t dt) {
  const int n = g.size(), r = g.index;
  const size_t es = dataTypeSize(dt), seg = segmentElems(comm, es), bytes = count * es;
  uint8_t* out = static_cast<uint8_t*>(recv);
  if (send != out + r * bytes) std::memcpy(out + r * bytes, send, bytes);
  const size_t nseg = (count + seg - 1) / seg;
  std::vector<OutUnit> outs;
  std::vector<InUnit> ins;
  for (int t = 0; t < n - 1; ++t) {
    size_t cSend = mod(r - t, n), cRecv = mod(r - t - 1, n);
    for (size_t k = 0; k < nseg; ++k) {
      size_t off = k * seg, elems = std::min(seg, count - off);
      int64_t after = t == 0 ? -1 : static_cast<int64_t>((t - 1) * nseg + k);
      outs.push_back({out + cSend * bytes + off * es, elems * es, after});
      ins.push_back({out + cRecv * bytes + off * es, elems * es, -1});
    }
  }
  int left = g.ranks[mod(r - 1, n)], right = g.ranks[mod(r + 1, n)];
  return runPipeline(
      comm, right, left, outs, ins, seg * es, [](size_t, const uint8_t*) {}, "ring allgather");
}

Status ringReduceScatter(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                         obcclDataType_t dt, obcclRedOp_t op) {
  const int n = g.size(), r = g.index;
  const size_t es = dataTypeSize(dt), seg = segmentElems(comm, es), bytes = count * es;
  const uint8_t* in = static_cast<const uint8_t*>(send);
  uint8_t* out = static_cast<uint8_t*>(recv);
  // Partial sums alternate between two chunk-sized work buffers: step t writes work[t % 2],
  // step t + 1 sends it, and step t + 2 may overwrite it once that send has left.
  uint8_t* work = n > 2 ? comm.scratch(kScratchCore1, 2 * bytes) : nullptr;
  const size_t nseg = (count + seg - 1) / seg;
  std::vector<OutUnit> outs;
  std::vector<InUnit> ins;
  for (int t = 0; t < n - 1; ++t) {
    for (size_t k = 0; k < nseg; ++k) {
      size_t off = k * seg, elems = std::min(seg, count - off);
      const uint8_t* src =
          t == 0 ? in + mod(r - 1, n) * bytes + off * es : work + ((t - 1) % 2) * bytes + off * es;
      int64_t after = t == 0 ? -1 : static_cast<int64_t>((t - 1) * nseg + k);
      outs.push_back({src, elems * es, after});
      int64_t afterOut = t >= 2 ? static_cast<int64_t>((t - 1) * nseg + k) : -1;
      ins.push_back({nullptr, elems * es, afterOut});
    }
  }
  obcclRedOp_t stepOp = op == obcclAvg ? obcclSum : op;
  ProcessFn process = [&](size_t i, const uint8_t* data) {
    int t = static_cast<int>(i / nseg);
    size_t k = i % nseg, off = k * seg, elems = std::min(seg, count - off);
    size_t c = mod(r - t - 2, n);
    const uint8_t* mine = in + c * bytes + off * es;
    bool last = t == n - 2;
    uint8_t* dst = last ? out + off * es : work + (t % 2) * bytes + off * es;
    if (last && op == obcclAvg) {
      reduceDivide(dst, mine, data, elems, dt, n);
    } else {
      reduce(dst, mine, data, elems, dt, stepOp);
    }
  };
  int left = g.ranks[mod(r - 1, n)], right = g.ranks[mod(r + 1, n)];
  return runPipeline(comm, right, left, outs, ins, seg * es, process, "ring reducescatter");
}

Status chainBroadcast(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                      obcclDataType_t dt, int root) {
  const int n = g.size(), r = g.index;
  const size_t es = dataTypeSize(dt), seg = segmentElems(comm, es);
  const int v = static_cast<int>(mod(r - root, n));
  uint8_t* out = static_cast<uint8_t*>(recv);
  if (v == 0 && send != recv) std::memcpy(out, send, count * es);
  const uint8_t* src = v == 0 ? static_cast<const uint8_t*>(send) : out;
  const size_t nseg = (count + seg - 1) / seg;
  std::vector<OutUnit> outs;
  std::vector<InUnit> ins;
  for (size_t k = 0; k < nseg; ++k) {
    size_t off = k * seg, elems = std::min(seg, count - off);
    if (v != 0) ins.push_back({out + off * es, elems * es, -1});
    if (v != n - 1) outs.push_back({src + off * es, elems * es, v == 0 ? -1 : int64_t(k)});
  }
  int prev = v == 0 ? -1 : g.ranks[mod(r - 1, n)];
  int next = v == n - 1 ? -1 : g.ranks[mod(r + 1, n)];
  return runPipeline(
      comm, next, prev, outs, ins, seg * es, [](size_t, const uint8_t*) {}, "chain broadcast");
}

}  // namespace obccl::core
