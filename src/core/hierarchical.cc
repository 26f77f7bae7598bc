// The hierarchical compressed allreduce (see hierarchical.h for the schedule and its semantics).
//
// The intra-host phases are direct exchanges (every rank sends each peer its part, cut into
// config().segmentBytes frames) rather than rings: the host average then has one fixed
// summation order, local rank 0 first, whatever the host size, and the ragged end of the buffer
// (shards past N) needs no padded copy of the input. Received segments are reduced while later
// ones are still in flight.
//
// The allgather moves each shard's output packed (sign bits and the scales of its groups), so it
// costs 1/32 of an fp32 allgather; every rank decodes its peers' shards itself, to the same bits.
//
// Scratch: kScratchUser0 holds the fp32 shard and the shard's fp32 output (when it cannot be
// decoded straight into recvbuff); kScratchUser1 holds the received segments during the
// reduce-scatter, then the saved error buffers on the slow path, then the packed shards.
#include "core/hierarchical.h"

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/compressed_allreduce.h"
#include "core/op.h"
#include "util/half.h"
#include "util/log.h"

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
  size_t block = 0;  // compressBlock
  size_t begin(int k) const { return static_cast<size_t>(k) * shard; }
  // Elements of shard k that hold data; the rest of it is padding.
  size_t valid(int k) const { return count > begin(k) ? std::min(count - begin(k), shard) : 0; }
  // The scale groups of a shard's output (section 4): one per chunk of the cross-host step, or
  // one per block inside each chunk. Every output value of a group is +b or -b.
  size_t perChunk() const { return block == 0 ? 1 : (chunk + block - 1) / block; }
  size_t groups() const { return shard / chunk * perChunk(); }
  size_t groupBegin(size_t g) const { return g / perChunk() * chunk + g % perChunk() * block; }
  size_t groupEnd(size_t g) const {
    const size_t chunkEnd = (g / perChunk() + 1) * chunk;
    return block == 0 ? chunkEnd : std::min(groupBegin(g) + block, chunkEnd);
  }
  // Shard k's output packed for the intra-host allgather: the groups' b, then one sign bit per
  // data element (1: negative, element 8i + j in bit 7 - j of byte i).
  size_t packedBytes(int k) const { return 4 * groups() + (valid(k) + 7) / 8; }
};

Result<Layout> makeLayout(size_t count, int hosts, int local, int block) {
  OBCCL_ASSIGN_OR_RETURN(CompressedLayout flat, compressedLayout(count, hosts * local));
  Layout l;
  l.count = count;
  l.padded = flat.padded;
  l.shard = flat.padded / static_cast<size_t>(local);
  l.chunk = l.shard / static_cast<size_t>(hosts);
  l.block = static_cast<size_t>(std::max(block, 0));
  return l;
}

uint32_t signBit(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits >> 31;
}

// Packs the first `valid` values of a shard's fp32 output (see Layout::packedBytes).
void packShard(const Layout& l, const float* out, size_t valid, uint8_t* dst) {
  for (size_t g = 0; g < l.groups(); ++g) {
    const size_t first = l.groupBegin(g);
    const float b = first < valid ? std::fabs(out[first]) : 0.0f;
    std::memcpy(dst + 4 * g, &b, 4);
  }
  uint8_t* bits = dst + 4 * l.groups();
  for (size_t k = 0; k < valid / 8; ++k) {
    uint32_t byte = 0;
    for (size_t j = 0; j < 8; ++j) byte |= signBit(out[8 * k + j]) << (7 - j);
    bits[k] = static_cast<uint8_t>(byte);
  }
  if (valid % 8 != 0) {
    uint32_t byte = 0;
    for (size_t i = valid / 8 * 8; i < valid; ++i) byte |= signBit(out[i]) << (7 - i % 8);
    bits[valid / 8] = static_cast<uint8_t>(byte);
  }
}

template <typename T>
void unpackAs(const Layout& l, const uint8_t* src, size_t valid, T* y, T (*encode)(float)) {
  const uint8_t* bits = src + 4 * l.groups();
  for (size_t g = 0; g < l.groups(); ++g) {
    const size_t begin = l.groupBegin(g), end = std::min(l.groupEnd(g), valid);
    if (begin >= end) continue;
    float b;
    std::memcpy(&b, src + 4 * g, 4);
    const T pos = encode(b), flip = pos ^ encode(-b);
    // Groups start on byte boundaries (chunks and blocks are multiples of 8 elements).
    const size_t whole = begin + (end - begin) / 8 * 8;
    for (size_t k = begin / 8; k < whole / 8; ++k) {
      const uint32_t byte = bits[k];
      T* out = y + 8 * k;
      for (int j = 0; j < 8; ++j)
        out[j] = pos ^ (static_cast<T>(0 - static_cast<T>((byte >> (7 - j)) & 1)) & flip);
    }
    for (size_t i = whole; i < end; ++i)
      y[i] = pos ^ (static_cast<T>(0 - static_cast<T>((bits[i >> 3] >> (7 - (i & 7))) & 1)) & flip);
  }
}

uint32_t encodeFloat32(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}
uint16_t encodeFloat16(float f) { return floatToHalf(f); }
uint16_t encodeBfloat16(float f) { return floatToBf16(f); }

// Writes a packed shard's `valid` values into y in datatype dt: the same values, bit for bit,
// as its owner decoded.
void unpackShard(const Layout& l, const uint8_t* src, size_t valid, uint8_t* y,
                 obcclDataType_t dt) {
  if (dt == obcclFloat32)
    unpackAs<uint32_t>(l, src, valid, reinterpret_cast<uint32_t*>(y), encodeFloat32);
  else
    unpackAs<uint16_t>(l, src, valid, reinterpret_cast<uint16_t*>(y),
                       dt == obcclFloat16 ? encodeFloat16 : encodeBfloat16);
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

// The agreement bits of u = v + e over n elements (v == nullptr: padding, u = e).
uint32_t checkSum(const float* v, const float* e, size_t n) {
  int nonFinite = 0, large = 0;
  for (size_t i = 0; i < n; ++i) {
    const float u = std::fabs((v ? v[i] : 0.0f) + e[i]);
    nonFinite |= !(u <= FLT_MAX);
    large |= u > kLargeMagnitude;
  }
  return (nonFinite ? kShardNonFinite : 0) | (large ? kLarge : 0);
}

// v = (((x[0] + x[1]) + ...) + x[L-1]) / L over n elements of datatype dt, and the agreement
// bits of v + e. float32 runs in as few passes as possible (one for two ranks per host).
uint32_t hostAverage(float* v, const uint8_t* const* x, int local, size_t n, obcclDataType_t dt,
                     const float* e) {
  const float l = static_cast<float>(local);
  if (dt != obcclFloat32) {
    for (size_t i = 0; i < n; ++i) {
      float acc = loadFloat(x[0], i, dt);
      for (int r = 1; r < local; ++r) acc += loadFloat(x[r], i, dt);
      v[i] = acc / l;
    }
    return checkSum(v, e, n);
  }
  auto f = [&](int r) { return reinterpret_cast<const float*>(x[r]); };
  const float* last = f(local - 1);
  const float* acc = f(0);  // the partial sum of the ranks before `last`
  if (local > 2) {
    const float *a = f(0), *b = f(1);
    for (size_t i = 0; i < n; ++i) v[i] = a[i] + b[i];
    for (int r = 2; r + 1 < local; ++r) {
      const float* c = f(r);
      for (size_t i = 0; i < n; ++i) v[i] += c[i];
    }
    acc = v;
  }
  int nonFinite = 0, large = 0;
  auto finish = [&](auto divide) {
    for (size_t i = 0; i < n; ++i) {
      const float a = divide(acc[i] + last[i]);
      v[i] = a;
      const float u = std::fabs(a + e[i]);
      nonFinite |= !(u <= FLT_MAX);
      large |= u > kLargeMagnitude;
    }
  };
  // Dividing by a power of two equals multiplying by its inverse, bit for bit (both round the
  // same exact value once), and a multiply is several times cheaper than a divide.
  if ((local & (local - 1)) == 0) {
    const float inverse = 1.0f / l;
    finish([inverse](float x) { return x * inverse; });
  } else {
    finish([l](float x) { return x / l; });
  }
  return (nonFinite ? kShardNonFinite : 0) | (large ? kLarge : 0);
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
  const float* output_ = nullptr;  // the compressed step's fp32 output (recvbuff or out_)
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
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t0 = Clock::now();
  OBCCL_TRY(reduceScatter());
  const Clock::time_point t1 = Clock::now();
  OBCCL_TRY(agreeOnInput());
  const Clock::time_point t2 = Clock::now();
  OBCCL_TRY(compressShard());
  const Clock::time_point t3 = Clock::now();
  OBCCL_TRY(gather());
  auto ms = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  OBCCL_DEBUG(kSubsysColl,
              "hierarchical compressed allreduce of %zu: reduce-scatter %.2f ms, agreement %.2f "
              "ms, cross-host step %.2f ms, allgather %.2f ms",
              layout_.count, ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, Clock::now()));
  return Status::ok();
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
  // Uncompressed data, as in any reduce-scatter: no payload checksum (the compressed step and the
  // packed allgather keep theirs).
  comm_.setPayloadChecksums(false);
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
  Status st = drive(ts, "hierarchical reduce-scatter inside the host", onRecv);
  comm_.setPayloadChecksums(true);
  return st;
}

// The host average of segment s of this rank's shard, in local-rank order, and its check.
void HierOp::reduceSegment(size_t s) {
  const size_t off = s * seg_, len = segLen(layout_.valid(me()), s);
  std::vector<const uint8_t*> x(plan_.local);
  for (int l = 0; l < plan_.local; ++l) x[l] = (l == me() ? sendAt(me()) : stage(l)) + off * es_;
  flags_ |= hostAverage(shard_ + off, x.data(), plan_.local, len, dt_, e_ + off);
}

// Every rank learns every rank's check before any error buffer is written: all fail alike, or
// all go on (on the slow path when any value is large).
Status HierOp::agreeOnInput() {
  const uint32_t server = checkSum(nullptr, s_, layout_.chunk);
  flags_ |= (server & kShardNonFinite ? kServerNonFinite : 0) | (server & kLarge);
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
  output_ = out;
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

// Every output value of a shard is +b or -b of its scale group, so the shards travel packed
// (1/32 of their fp32 size plus the scales) and every rank decodes its peers' shards itself.
Status HierOp::gather() {
  const int local = plan_.local;
  const size_t frame = std::max<size_t>(1, comm_.config().segmentBytes);
  auto frames = [&](size_t bytes) { return (bytes + frame - 1) / frame; };
  std::vector<size_t> offset(local + 1, 0);
  for (int p = 0; p < local; ++p) offset[p + 1] = offset[p] + layout_.packedBytes(p);
  uint8_t* packed = comm_.scratch(kScratchUser1, offset[local]);
  packShard(layout_, output_, layout_.valid(me()), packed + offset[me()]);
  size_t recvs = 0;
  for (int p = 0; p < local; ++p)
    if (p != me()) recvs += frames(layout_.packedBytes(p));
  const size_t mineBytes = layout_.packedBytes(me());
  std::vector<Transfer> ts(recvs + static_cast<size_t>(local - 1) * frames(mineBytes));
  std::vector<int> owner(recvs);
  std::vector<size_t> pending(local, 0);
  size_t t = 0;
  for (int p = 0; p < local; ++p) {
    if (p == me()) continue;
    const size_t bytes = layout_.packedBytes(p);
    pending[p] = frames(bytes);
    for (size_t f = 0; f < frames(bytes); ++f) {
      owner[t] = p;
      OBCCL_TRY(comm_.postRecv(peerRank(p), packed + offset[p] + f * frame,
                               std::min(frame, bytes - f * frame), &ts[t++],
                               static_cast<uint32_t>(f)));
    }
  }
  for (int d = 1; d < local; ++d) {
    const int p = (me() + d) % local;
    for (size_t f = 0; f < frames(mineBytes); ++f)
      OBCCL_TRY(comm_.postSend(peerRank(p), packed + offset[me()] + f * frame,
                               std::min(frame, mineBytes - f * frame), &ts[t++],
                               static_cast<uint32_t>(f)));
  }
  auto onRecv = [&](size_t i) {
    const int p = owner[i];
    if (--pending[p] == 0)
      unpackShard(layout_, packed + offset[p], layout_.valid(p), recvAt(p), dt_);
  };
  return drive(ts, "hierarchical allgather inside the host", onRecv);
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
  OBCCL_ASSIGN_OR_RETURN(Layout l, makeLayout(count, plan.hosts, plan.local, 0));
  *workerCount = l.shard;
  *serverCount = l.chunk;
  return Status::ok();
}

Status hierarchicalCompressedAllReduce(Comm& comm, const HierPlan& plan, const void* send,
                                       void* recv, size_t count, obcclDataType_t datatype,
                                       float* workerError, float* serverError) {
  if (!plan.active || plan.local < 2)
    return internalError("hierarchical compressed allreduce called without an active plan");
  OBCCL_ASSIGN_OR_RETURN(Layout layout,
                         makeLayout(count, plan.hosts, plan.local, comm.config().compressBlock));
  OpDesc desc{OpKind::kCompressedAllReduce, count, datatype, obcclAvg, -1, true};
  return comm.runOp(desc, [&]() -> Status {
    if (count == 0) return Status::ok();
    HierOp op(comm, plan, layout, send, recv, datatype, workerError, serverError);
    return op.run();
  });
}

}  // namespace obccl::core
