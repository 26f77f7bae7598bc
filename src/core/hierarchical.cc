// The hierarchical compressed allreduce (see hierarchical.h for the schedule and its semantics).
//
// The intra-host phases are direct exchanges (every rank sends each peer its part, cut into
// config().segmentBytes frames) rather than rings: the host average then has one fixed
// summation order, local rank 0 first, whatever the host size, and the ragged end of the buffer
// (shards past N) needs no padded copy of the input. Received segments are reduced while later
// ones are still in flight.
//
// Scratch: kScratchUser0 holds the fp32 shard and the shard's fp32 output (when it cannot be
// decoded straight into recvbuff); kScratchUser1 holds the received segments during the
// reduce-scatter, then the saved error buffers on the slow path.
#include "core/hierarchical.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/compressed_allreduce.h"
#include "core/op.h"
#include "util/half.h"

namespace obccl::core {
namespace {

// Above this magnitude of v + e or s, sums of H scales plus a server error could overflow fp32
// in the cross-host step, so the slow path (saved error buffers) runs.
constexpr float kLargeMagnitude = 18446744073709551616.0f;  // 2^64

// Bits of the word each rank contributes to the input agreement.
constexpr uint32_t kShardNonFinite = 1;   // v + workerError is not finite in this rank's shard
constexpr uint32_t kServerNonFinite = 2;  // serverError holds NaN or Inf
constexpr uint32_t kLarge = 4;            // finite, but above kLargeMagnitude somewhere
// Bits of the diagnosis each rank contributes once the agreement failed.
constexpr uint32_t kBadSend = 1, kBadWorker = 2, kBadServer = 4;

struct Layout {
  size_t count = 0, padded = 0, shard = 0, chunk = 0;
  size_t begin(int k) const { return static_cast<size_t>(k) * shard; }
  // Elements of shard k that hold data; the rest of it is padding.
  size_t valid(int k) const { return count > begin(k) ? std::min(count - begin(k), shard) : 0; }
};

Result<Layout> makeLayout(size_t count, int hosts, int local) {
  OBCCL_ASSIGN_OR_RETURN(CompressedLayout flat, compressedLayout(count, hosts * local));
  Layout l;
  l.count = count;
  l.padded = flat.padded;
  l.shard = flat.padded / static_cast<size_t>(local);
  l.chunk = l.shard / static_cast<size_t>(hosts);
  return l;
}

float loadFloat(const uint8_t* p, size_t i, obcclDataType_t dt) {
  if (dt == obcclFloat32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return dt == obcclFloat16 ? halfToFloat(h) : bf16ToFloat(h);
}

void storeFloats(uint8_t* dst, const float* src, size_t n, obcclDataType_t dt) {
  if (dt == obcclFloat32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    uint16_t h = dt == obcclFloat16 ? floatToHalf(src[i]) : floatToBf16(src[i]);
    std::memcpy(dst + 2 * i, &h, 2);
  }
}

bool finiteData(const uint8_t* x, size_t n, obcclDataType_t dt) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(loadFloat(x, i, dt))) return false;
  return true;
}

bool finiteFloats(const float* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

// v = x (first) or v += x, with x in datatype dt.
void accumulate(float* v, const uint8_t* x, size_t n, obcclDataType_t dt, bool first) {
  if (dt == obcclFloat32) {
    const float* f = reinterpret_cast<const float*>(x);
    if (first) {
      std::memcpy(v, f, n * 4);
    } else {
      for (size_t i = 0; i < n; ++i) v[i] += f[i];
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) v[i] = first ? loadFloat(x, i, dt) : v[i] + loadFloat(x, i, dt);
}

// The agreement bits of u = v + e over n elements (v == nullptr: padding, u = e).
uint32_t checkSum(const float* v, const float* e, size_t n) {
  int nonFinite = 0, large = 0;
  for (size_t i = 0; i < n; ++i) {
    float u = std::fabs((v ? v[i] : 0.0f) + e[i]);
    nonFinite |= !(u <= FLT_MAX);
    large |= u > kLargeMagnitude;
  }
  return (nonFinite ? kShardNonFinite : 0) | (large ? kLarge : 0);
}

// v = (v + x) / L with x in datatype dt, then the agreement bits of v + e.
uint32_t finishAverage(float* v, const uint8_t* x, size_t n, obcclDataType_t dt, int local,
                       const float* e) {
  const float l = static_cast<float>(local);
  if (dt == obcclFloat32) {
    const float* f = reinterpret_cast<const float*>(x);
    for (size_t i = 0; i < n; ++i) v[i] = (v[i] + f[i]) / l;
  } else {
    for (size_t i = 0; i < n; ++i) v[i] = (v[i] + loadFloat(x, i, dt)) / l;
  }
  return checkSum(v, e, n);
}

// "0, 2, 5": the ranks whose word has `bit` set.
std::string ranksWith(const std::vector<uint32_t>& words, uint32_t bit) {
  std::string s;
  for (size_t r = 0; r < words.size(); ++r)
    if (words[r] & bit) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

class HierOp {
 public:
  HierOp(Comm& comm, const HierPlan& plan, const Layout& layout, const void* send, void* recv,
         obcclDataType_t dt, float* e, float* s)
      : comm_(comm),
        plan_(plan),
        layout_(layout),
        x_(static_cast<const uint8_t*>(send)),
        y_(static_cast<uint8_t*>(recv)),
        dt_(dt),
        es_(dataTypeSize(dt)),
        e_(e),
        s_(s) {}

  Status run();

 private:
  int me() const { return plan_.intra.index; }
  int peerRank(int local) const { return plan_.intra.ranks[local]; }
  const uint8_t* sendAt(int k) const { return x_ + layout_.begin(k) * es_; }
  uint8_t* recvAt(int k) const { return y_ + layout_.begin(k) * es_; }
  size_t segCount(size_t total) const { return (total + seg_ - 1) / seg_; }
  size_t segLen(size_t total, size_t s) const { return std::min(seg_, total - s * seg_); }
  // Where peer p's part of this rank's shard is received (slots skip this rank).
  uint8_t* stage(int p) const {
    size_t slot = static_cast<size_t>(p < me() ? p : p - 1);
    return stage_ + slot * layout_.valid(me()) * es_;
  }

  Status reduceScatter();
  void reduceSegment(size_t s);
  Status agreeOnInput();
  Status failOnInput(const std::vector<uint32_t>& flags);
  Status compressShard();
  Status compressChecked(float* out);
  Status gather();
  Status drive(std::vector<Transfer>& ts, const std::string& what,
               const std::function<void(size_t)>& onRecv);

  Comm& comm_;
  const HierPlan& plan_;
  const Layout layout_;
  const uint8_t* x_;
  uint8_t* y_;
  const obcclDataType_t dt_;
  const size_t es_;
  float* e_;
  float* s_;

  size_t seg_ = 1;  // elements per intra-host frame
  std::vector<int> peers_;
  float* shard_ = nullptr;  // S floats: the host average, then the compressed step's input
  float* out_ = nullptr;    // S floats: the compressed step's output when not decoded in place
  uint8_t* stage_ = nullptr;
  uint32_t flags_ = 0;  // this rank's agreement bits
  bool slow_ = false;   // some rank saw values above kLargeMagnitude
};

Status HierOp::run() {
  seg_ = std::max<size_t>(1, comm_.config().segmentBytes / es_);
  for (int p = 0; p < plan_.local; ++p)
    if (p != me()) peers_.push_back(peerRank(p));
  shard_ = reinterpret_cast<float*>(comm_.scratch(kScratchUser0, 2 * layout_.shard * 4));
  out_ = shard_ + layout_.shard;
  const size_t stageBytes = static_cast<size_t>(plan_.local - 1) * layout_.valid(me()) * es_;
  stage_ = comm_.scratch(kScratchUser1, stageBytes);
  OBCCL_TRY(reduceScatter());
  OBCCL_TRY(agreeOnInput());
  OBCCL_TRY(compressShard());
  return gather();
}

// Posts every receive of this rank's shard and every send of the peers' shards at once, and
// reduces segment s as soon as every peer's part of it has arrived.
Status HierOp::reduceScatter() {
  const int local = plan_.local;
  const size_t mine = layout_.valid(me()), nseg = segCount(mine);
  size_t sends = 0;
  for (int p = 0; p < local; ++p)
    if (p != me()) sends += segCount(layout_.valid(p));
  std::vector<Transfer> ts(static_cast<size_t>(local - 1) * nseg + sends);
  size_t t = 0;
  for (int p = 0; p < local; ++p) {
    if (p == me()) continue;
    for (size_t s = 0; s < nseg; ++s)
      OBCCL_TRY(comm_.postRecv(peerRank(p), stage(p) + s * seg_ * es_, segLen(mine, s) * es_,
                               &ts[t++], static_cast<uint32_t>(s)));
  }
  for (int d = 1; d < local; ++d) {
    const int p = (me() + d) % local;
    const size_t theirs = layout_.valid(p);
    for (size_t s = 0; s < segCount(theirs); ++s)
      OBCCL_TRY(comm_.postSend(peerRank(p), sendAt(p) + s * seg_ * es_, segLen(theirs, s) * es_,
                               &ts[t++], static_cast<uint32_t>(s)));
  }
  std::fill(shard_ + mine, shard_ + layout_.shard, 0.0f);
  flags_ |= checkSum(nullptr, e_ + mine, layout_.shard - mine);
  std::vector<int> arrived(nseg, 0);
  size_t next = 0;
  auto onRecv = [&](size_t i) {
    ++arrived[i % nseg];
    while (next < nseg && arrived[next] == local - 1) reduceSegment(next++);
  };
  return drive(ts, "hierarchical reduce-scatter inside the host", onRecv);
}

// The host average of segment s of this rank's shard, in local-rank order, and its check.
void HierOp::reduceSegment(size_t s) {
  const size_t off = s * seg_, len = segLen(layout_.valid(me()), s);
  float* v = shard_ + off;
  for (int l = 0; l < plan_.local; ++l) {
    const uint8_t* x = (l == me() ? sendAt(me()) : stage(l)) + off * es_;
    if (l + 1 < plan_.local)
      accumulate(v, x, len, dt_, l == 0);
    else
      flags_ |= finishAverage(v, x, len, dt_, plan_.local, e_ + off);
  }
}

// Every rank learns every rank's check before any error buffer is written: all fail alike, or
// all go on (on the slow path when any value is large).
Status HierOp::agreeOnInput() {
  if (!finiteFloats(s_, layout_.chunk)) flags_ |= kServerNonFinite;
  flags_ |= checkSum(nullptr, s_, layout_.chunk) & kLarge;
  std::vector<uint32_t> all(static_cast<size_t>(comm_.nranks()), 0);
  OBCCL_TRY(comm_.allGather(&flags_, all.data(), 1, obcclInt32));
  uint32_t any = 0;
  for (uint32_t f : all) any |= f;
  if (any & (kShardNonFinite | kServerNonFinite)) return failOnInput(all);
  slow_ = (any & kLarge) != 0;
  return Status::ok();
}

// Names the culprits: every rank checks its own buffers and the diagnoses are gathered.
Status HierOp::failOnInput(const std::vector<uint32_t>& flags) {
  uint32_t diag = 0;
  if (!finiteData(x_, layout_.count, dt_)) diag |= kBadSend;
  if (!finiteFloats(e_, layout_.shard)) diag |= kBadWorker;
  if (!finiteFloats(s_, layout_.chunk)) diag |= kBadServer;
  std::vector<uint32_t> all(flags.size(), 0);
  OBCCL_TRY(comm_.allGather(&diag, all.data(), 1, obcclInt32));
  comm_.markFailureAgreed();
  std::string what;
  auto add = [&](const std::string& part, const std::string& ranks) {
    if (!ranks.empty()) what += (what.empty() ? "" : "; ") + part + " on rank(s) " + ranks;
  };
  add("sendbuff holds NaN or Inf", ranksWith(all, kBadSend));
  add("workerError holds NaN or Inf", ranksWith(all, kBadWorker));
  add("serverError holds NaN or Inf", ranksWith(all, kBadServer));
  if (what.empty())
    add("the host average plus workerError overflowed in the shard",
        ranksWith(flags, kShardNonFinite));
  return invalidArgument("non-finite input to the hierarchical compressed allreduce: " + what +
                         "; error buffers left unchanged on every rank");
}

// The cross-host compressed allreduce of this rank's shard, decoded straight into recvbuff when
// the shard is float32 data without padding.
Status HierOp::compressShard() {
  const size_t mine = layout_.valid(me());
  const bool direct = !slow_ && dt_ == obcclFloat32 && mine == layout_.shard;
  float* out = direct ? reinterpret_cast<float*>(recvAt(me())) : out_;
  if (slow_) {
    OBCCL_TRY(compressChecked(out));
  } else {
    OBCCL_TRY(
        compressedAllReduce(comm_, shard_, out, layout_.shard, obcclFloat32, e_, s_, &plan_.cross));
  }
  if (!direct) storeFloats(recvAt(me()), out, mine, dt_);
  return Status::ok();
}

// Slow path: a host group's step may fail on overflow while the others succeed, so the error
// buffers are saved, the outcomes are gathered inside each host (every host has one member of
// every group), and the buffers are restored everywhere when any group failed.
Status HierOp::compressChecked(float* out) {
  const size_t worker = layout_.shard, server = layout_.chunk;
  float* saved = reinterpret_cast<float*>(comm_.scratch(kScratchUser1, (worker + server) * 4));
  std::memcpy(saved, e_, worker * 4);
  std::memcpy(saved + worker, s_, server * 4);
  Status st =
      compressedAllReduce(comm_, shard_, out, layout_.shard, obcclFloat32, e_, s_, &plan_.cross);
  if (!st.isOk() && !comm_.health().isOk()) return st;  // not agreed: peers were told already
  uint32_t failed = st.isOk() ? 0 : 1;
  std::vector<uint32_t> all(static_cast<size_t>(plan_.local), 0);
  OBCCL_TRY(comm_.allGather(&failed, all.data(), 1, obcclInt32, &plan_.intra));
  std::string groups = ranksWith(all, 1);
  if (groups.empty()) return Status::ok();
  if (st.isOk()) {
    std::memcpy(e_, saved, worker * 4);
    std::memcpy(s_, saved + worker, server * 4);
  }
  comm_.markFailureAgreed();
  return invalidArgument(
      "the hierarchical compressed allreduce overflowed fp32 in the cross-host step of local "
      "rank(s) " +
      groups + " (inputs or error buffers near the float range); error buffers left unchanged " +
      "on every rank" + (st.isOk() ? std::string() : " (this rank's group: " + st.message() + ")"));
}

// Every rank sends its decoded shard to each peer of its host and receives theirs in place.
Status HierOp::gather() {
  const int local = plan_.local;
  const size_t mine = layout_.valid(me());
  size_t recvs = 0;
  for (int p = 0; p < local; ++p)
    if (p != me()) recvs += segCount(layout_.valid(p));
  std::vector<Transfer> ts(recvs + static_cast<size_t>(local - 1) * segCount(mine));
  size_t t = 0;
  for (int p = 0; p < local; ++p) {
    if (p == me()) continue;
    const size_t theirs = layout_.valid(p);
    for (size_t s = 0; s < segCount(theirs); ++s)
      OBCCL_TRY(comm_.postRecv(peerRank(p), recvAt(p) + s * seg_ * es_, segLen(theirs, s) * es_,
                               &ts[t++], static_cast<uint32_t>(s)));
  }
  for (int d = 1; d < local; ++d) {
    const int p = (me() + d) % local;
    for (size_t s = 0; s < segCount(mine); ++s)
      OBCCL_TRY(comm_.postSend(peerRank(p), recvAt(me()) + s * seg_ * es_, segLen(mine, s) * es_,
                               &ts[t++], static_cast<uint32_t>(s)));
  }
  return drive(ts, "hierarchical allgather inside the host", nullptr);
}

// Drives the posted transfers until each one is done and checked; onRecv(i) runs once receive i
// has been checked.
Status HierOp::drive(std::vector<Transfer>& ts, const std::string& what,
                     const std::function<void(size_t)>& onRecv) {
  std::vector<bool> checked(ts.size(), false);
  size_t left = ts.size();
  int idle = 0;
  while (left > 0) {
    bool moved = false;
    Status st = comm_.progressPeers(peers_, &moved);
    if (!st.isOk()) return comm_.fail(st);
    bool advanced = false;
    for (size_t i = 0; i < ts.size(); ++i) {
      if (checked[i] || !ts[i].req.done) continue;
      Status c = comm_.checkDone(ts[i]);
      if (!c.isOk()) return comm_.fail(c);
      checked[i] = true;
      --left;
      advanced = true;
      if (ts[i].isRecv && onRecv) onRecv(i);
    }
    if (moved || advanced) {
      idle = 0;
      continue;
    }
    std::vector<int> pending;
    for (size_t i = 0; i < ts.size(); ++i)
      if (!checked[i] && std::find(pending.begin(), pending.end(), ts[i].peer) == pending.end())
        pending.push_back(ts[i].peer);
    st = comm_.idleWait(peers_, comm_.opDeadline(), &idle, what, pending);
    if (!st.isOk()) return comm_.fail(st);
  }
  return Status::ok();
}

std::string unevenHostsMessage(const topo::HostMap& m) {
  int most = 0, fewer = 0;
  for (int h = 1; h < m.nhosts(); ++h) {
    if (m.hostRanks[h].size() > m.hostRanks[most].size()) most = h;
    if (m.hostRanks[h].size() < m.hostRanks[fewer].size()) fewer = h;
  }
  auto describe = [&](int h) {
    std::string ranks;
    for (int r : m.hostRanks[h]) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    return "host '" + m.hosts[h] + "' has " + std::to_string(m.hostRanks[h].size()) + " rank(s) (" +
           ranks + ")";
  };
  return "hierarchical compressed allreduce (hierarchical = 1) needs the same number of ranks "
         "on every host, but " +
         describe(most) + " and " + describe(fewer) +
         ": set hierarchical to -1 (auto, which runs the flat schedule on this layout) or 0";
}

}  // namespace

Result<HierPlan> hierarchicalPlan(const Comm& comm) {
  HierPlan plan;
  const int mode = comm.config().hierarchical;
  const topo::HostMap& m = comm.hostMap();
  if (mode == 0 || m.nranks() != comm.nranks()) return plan;
  const int hosts = m.nhosts(), most = m.maxLocalSize();
  if (mode < 0 && hosts < 2) return plan;
  if (most != m.minLocalSize()) {
    if (mode < 0) return plan;
    return invalidUsage(unevenHostsMessage(m));
  }
  if (most < 2) return plan;  // one rank per host: the flat schedule is the same
  const int r = comm.rank();
  plan.active = true;
  plan.hosts = hosts;
  plan.local = most;
  plan.intra.ranks = m.hostRanks[m.hostIndex[r]];
  plan.intra.index = m.localRank[r];
  plan.cross.ranks = m.ranksWithLocalRank(m.localRank[r]);
  plan.cross.index = m.hostIndex[r];
  return plan;
}

Status hierarchicalErrorCounts(const HierPlan& plan, size_t count, size_t* workerCount,
                               size_t* serverCount) {
  OBCCL_ASSIGN_OR_RETURN(Layout l, makeLayout(count, plan.hosts, plan.local));
  *workerCount = l.shard;
  *serverCount = l.chunk;
  return Status::ok();
}

Status hierarchicalCompressedAllReduce(Comm& comm, const HierPlan& plan, const void* send,
                                       void* recv, size_t count, obcclDataType_t datatype,
                                       float* workerError, float* serverError) {
  if (!plan.active || plan.local < 2)
    return internalError("hierarchical compressed allreduce called without an active plan");
  OBCCL_ASSIGN_OR_RETURN(Layout layout, makeLayout(count, plan.hosts, plan.local));
  OpDesc desc{OpKind::kCompressedAllReduce, count, datatype, obcclAvg, -1, true};
  return comm.runOp(desc, [&]() -> Status {
    if (count == 0) return Status::ok();
    HierOp op(comm, plan, layout, send, recv, datatype, workerError, serverError);
    return op.run();
  });
}

}  // namespace obccl::core
