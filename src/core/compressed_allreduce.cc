// The compressed allreduce engine (see compressed_allreduce.h for the protocol).
//
// Buffers live in the communicator's kScratchCompressed slot, one 64-byte aligned slot per frame:
//   p1Out(j, s): this rank's phase-1 frame for segment s of chunk j ([scales][signs])
//   p1In(i, s):  rank i's phase-1 frame for segment s of this rank's chunk (i = r: p1Out(r, s))
//   p2(j, s):    rank j's phase-2 frame for segment s of chunk j ([bad-rank words][scales][signs])
// Per connection, all phase-1 frames precede all phase-2 frames, so every receive is posted up
// front in the order the peer sends.
#include "core/compressed_allreduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "core/hierarchical.h"
#include "core/memory.h"
#include "core/op.h"

namespace obccl::core {
namespace {

constexpr size_t kSlotAlign = 64;

size_t alignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

bool allFinite(const float* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

// Segments of a chunk and the frames that carry them.
struct Geometry {
  int n = 1, r = 0;
  size_t count = 0, padded = 0, chunk = 0;
  size_t block = 0;  // compressBlock; 0: one scale for the vector (worker) or chunk (server)
  size_t seg = 0;    // elements per segment: a multiple of 8 and of block
  size_t segs = 0;   // segments per chunk
  size_t words = 0;  // 32-bit words of a bad-rank set

  size_t segLen(size_t s) const { return std::min(seg, chunk - s * seg); }
  size_t scalesIn(size_t s) const { return block == 0 ? 1 : codec::blockCount(segLen(s), block); }
  size_t p1Bytes(size_t s) const { return 4 * scalesIn(s) + segLen(s) / 8; }
  size_t p2Bytes(size_t s) const { return 4 * words + p1Bytes(s); }
  size_t slot() const { return alignUp(p2Bytes(0), kSlotAlign); }
  // Elements behind scale k of segment s on the worker side (server: chunk instead of padded).
  size_t scaleElems(size_t s, size_t k, size_t whole) const {
    return block == 0 ? whole : std::min(block, segLen(s) - k * block);
  }
};

Geometry makeGeometry(const CompressedLayout& l, const Group& g, const Config& cfg) {
  Geometry geo;
  geo.n = g.size();
  geo.r = g.index;
  geo.count = l.count;
  geo.padded = l.padded;
  geo.chunk = l.chunk;
  geo.block = static_cast<size_t>(std::max(cfg.compressBlock, 0));
  size_t unit = geo.block > 0 ? geo.block : 8;
  size_t want = std::max<size_t>(cfg.segmentBytes / sizeof(float), unit);
  geo.seg = std::min(want / unit * unit, geo.chunk);
  geo.segs = (geo.chunk + geo.seg - 1) / geo.seg;
  geo.words = (static_cast<size_t>(geo.n) + 31) / 32;
  return geo;
}

std::string rankList(const std::vector<uint32_t>& set, int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    if (set[i / 32] & (1u << (i % 32))) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

class CompressedOp {
 public:
  CompressedOp(Comm& comm, const Group& g, const codec::Kernels& k, const Geometry& geo,
               const void* send, void* recv, obcclDataType_t dt, float* e, float* s)
      : comm_(comm),
        g_(g),
        k_(k),
        geo_(geo),
        x_(static_cast<const uint8_t*>(send)),
        y_(static_cast<uint8_t*>(recv)),
        dt_(dt),
        es_(dataTypeSize(dt)),
        e_(e),
        s_(s) {}

  Status run();

 private:
  // Frame slots.
  uint8_t* p1Out(size_t j, size_t s) { return buf_ + (j * geo_.segs + s) * geo_.slot(); }
  uint8_t* p1In(size_t i, size_t s) {
    if (static_cast<int>(i) == geo_.r) return p1Out(geo_.r, s);
    return buf_ + ((geo_.n + i) * geo_.segs + s) * geo_.slot();
  }
  uint8_t* p2(size_t j, size_t s) {
    return buf_ + ((2 * geo_.n + j) * geo_.segs + s) * geo_.slot();
  }
  static float* scalesOf(uint8_t* frame) { return reinterpret_cast<float*>(frame); }
  // The worker scales that apply to segment s: its own frame's, or with compressBlock = 0 the one
  // scale, which only the chunk's last frame carries (the others leave before it is known).
  size_t scaleFrame(size_t s) const { return geo_.block == 0 ? geo_.segs - 1 : s; }
  float* outScales(size_t j, size_t s) { return scalesOf(p1Out(j, scaleFrame(s))); }
  float* inScales(size_t i, size_t s) { return scalesOf(p1In(i, scaleFrame(s))); }
  uint8_t* signsOf(uint8_t* frame, size_t s) { return frame + 4 * geo_.scalesIn(s); }
  float* p2Scales(size_t j, size_t s) {
    return reinterpret_cast<float*>(p2(j, s) + 4 * geo_.words);
  }
  uint8_t* p2Signs(size_t j, size_t s) { return p2(j, s) + 4 * geo_.words + 4 * geo_.scalesIn(s); }
  size_t ti(size_t peer, size_t s) const { return peer * geo_.segs + s; }  // transfer index
  int peerRank(size_t i) const { return g_.ranks[i]; }

  Status postReceives();
  Status encodeWorker();
  void encodeSegment(size_t j, size_t s);
  Status postPhase1(size_t j, size_t s);
  Status pump(bool* moved);
  // The server step's inputs for segment s: every rank's phase-1 frame for it.
  struct ServerInputs {
    std::vector<const uint8_t*> bits;
    std::vector<const float*> scales;
    codec::ServerSpan span;
  };
  ServerInputs serverInputs(size_t s);
  bool serverReady(size_t s) const;
  Status serve();
  void serveSegment(size_t s);
  void finishServerB0();
  Status postPhase2Ready();
  Status waitDone();
  Status agree();
  void finish();
  void noteScales(size_t rank, const float* scales, size_t n);

  Comm& comm_;
  const Group& g_;
  const codec::Kernels& k_;
  const Geometry geo_;
  const uint8_t* x_;
  uint8_t* y_;
  obcclDataType_t dt_;
  size_t es_;
  float* e_;
  float* s_;

  uint8_t* buf_ = nullptr;
  std::vector<int> peers_;  // communicator ranks of the other group members
  std::vector<Transfer> p1Send_, p1Recv_, p2Send_, p2Recv_;  // [group rank * segs + segment]
  std::vector<size_t> p1Next_, p2Next_;  // per group rank: receives checked so far
  std::vector<size_t> segReady_;         // per segment: peers whose phase-1 frame arrived
  size_t sendsPosted_ = 0, sendsDone_ = 0;
  size_t served_ = 0;    // segments whose server frame is built
  size_t p2Posted_ = 0;  // segments whose server frame was sent
  bool phase1Posted_ = false;
  std::vector<codec::NormAccumulator> norms_;
  codec::NormAccumulator workerNorm_, serverNorm_;  // compressBlock = 0
  std::vector<uint32_t> badInput_, badServer_;      // rank sets
  std::vector<Transfer*> sendOrder_;                // every posted send, in posting order
};

Status CompressedOp::run() {
  const size_t slots = 3 * static_cast<size_t>(geo_.n) * geo_.segs;
  buf_ = comm_.scratch(kScratchCompressed, slots * geo_.slot());
  const size_t frames = static_cast<size_t>(geo_.n) * geo_.segs;
  p1Send_.resize(frames);
  p1Recv_.resize(frames);
  p2Send_.resize(frames);
  p2Recv_.resize(frames);
  p1Next_.assign(geo_.n, 0);
  p2Next_.assign(geo_.n, 0);
  segReady_.assign(geo_.segs, 0);
  sendOrder_.reserve(2 * frames);
  badInput_.assign(geo_.words, 0);
  badServer_.assign(geo_.words, 0);
  norms_.resize(geo_.scalesIn(0));
  for (int i = 0; i < geo_.n; ++i)
    if (i != geo_.r) peers_.push_back(peerRank(i));
  OBCCL_TRY(postReceives());
  OBCCL_TRY(encodeWorker());
  OBCCL_TRY(serve());
  OBCCL_TRY(waitDone());
  OBCCL_TRY(agree());
  finish();
  return Status::ok();
}

Status CompressedOp::postReceives() {
  for (int i = 0; i < geo_.n; ++i) {
    if (i == geo_.r) continue;
    for (size_t s = 0; s < geo_.segs; ++s)
      OBCCL_TRY(comm_.postRecv(peerRank(i), p1In(i, s), geo_.p1Bytes(s), &p1Recv_[ti(i, s)],
                               static_cast<uint32_t>(s)));
    for (size_t s = 0; s < geo_.segs; ++s)
      OBCCL_TRY(comm_.postRecv(peerRank(i), p2(i, s), geo_.p2Bytes(s), &p2Recv_[ti(i, s)],
                               static_cast<uint32_t>(geo_.segs + s)));
  }
  return Status::ok();
}

// With compressBlock > 0, compresses the peers' chunks in ring order (so ranks start on different
// peers) and this rank's own chunk last, each frame leaving as soon as it is built. With
// compressBlock = 0 the one norm must see the elements in index order (codec.h): every frame but
// a chunk's last leaves at once (its scale slot holds 0, unused), the last ones with a_r at the
// end.
Status CompressedOp::encodeWorker() {
  for (int d = 1; d <= geo_.n; ++d) {
    size_t j = static_cast<size_t>(geo_.block > 0 ? (geo_.r + d) % geo_.n : d - 1);
    for (size_t s = 0; s < geo_.segs; ++s) {
      encodeSegment(j, s);
      bool final = geo_.block > 0 || s + 1 < geo_.segs;
      if (static_cast<int>(j) != geo_.r && final) OBCCL_TRY(postPhase1(j, s));
      bool moved = false;
      OBCCL_TRY(pump(&moved));
    }
  }
  if (geo_.block == 0) {
    const size_t last = geo_.segs - 1;
    for (int j = 0; j < geo_.n; ++j)
      scalesOf(p1Out(j, last))[0] = codec::rmsScale(workerNorm_, geo_.padded);
    for (int d = 1; d < geo_.n; ++d) OBCCL_TRY(postPhase1((geo_.r + d) % geo_.n, last));
  }
  for (size_t s = 0; s < geo_.segs; ++s)
    if (scaleFrame(s) == s) noteScales(geo_.r, outScales(geo_.r, s), geo_.scalesIn(s));
  phase1Posted_ = true;
  return Status::ok();
}

void CompressedOp::encodeSegment(size_t j, size_t s) {
  const size_t begin = j * geo_.chunk + s * geo_.seg, len = geo_.segLen(s);
  const size_t valid = geo_.count > begin ? std::min(geo_.count - begin, len) : 0;
  const void* x = valid > 0 ? x_ + begin * es_ : nullptr;
  uint8_t* frame = p1Out(j, s);
  if (geo_.block == 0) {
    scalesOf(frame)[0] = 0.0f;  // set for the chunk's last frame once the norm is complete
    k_.workerEncode(x, dt_, valid, e_ + begin, len, 0, signsOf(frame, s), &workerNorm_);
    return;
  }
  const size_t nb = geo_.scalesIn(s);
  std::fill(norms_.begin(), norms_.begin() + nb, codec::NormAccumulator());
  k_.workerEncode(x, dt_, valid, e_ + begin, len, geo_.block, signsOf(frame, s), norms_.data());
  float* scales = scalesOf(frame);
  for (size_t k = 0; k < nb; ++k) scales[k] = codec::rmsScale(norms_[k], geo_.scaleElems(s, k, 0));
}

Status CompressedOp::postPhase1(size_t j, size_t s) {
  Transfer* t = &p1Send_[ti(j, s)];
  OBCCL_TRY(comm_.postSend(peerRank(j), p1Out(j, s), geo_.p1Bytes(s), t, static_cast<uint32_t>(s)));
  sendOrder_.push_back(t);
  ++sendsPosted_;
  return Status::ok();
}

// Advances every connection once and checks the receives and sends that completed, in order.
Status CompressedOp::pump(bool* moved) {
  Status st = comm_.progressPeers(peers_, moved);
  if (!st.isOk()) return comm_.fail(st);
  for (int i = 0; i < geo_.n; ++i) {
    if (i == geo_.r) continue;
    while (p1Next_[i] < geo_.segs && p1Recv_[ti(i, p1Next_[i])].req.done) {
      const Transfer& t = p1Recv_[ti(i, p1Next_[i])];
      Status c = comm_.checkDone(t);
      if (!c.isOk()) return comm_.fail(c);
      size_t s = p1Next_[i]++;
      if (scaleFrame(s) == s) noteScales(i, inScales(i, s), geo_.scalesIn(s));
      ++segReady_[s];
      *moved = true;
    }
    while (p1Next_[i] == geo_.segs && p2Next_[i] < geo_.segs &&
           p2Recv_[ti(i, p2Next_[i])].req.done) {
      Status c = comm_.checkDone(p2Recv_[ti(i, p2Next_[i])]);
      if (!c.isOk()) return comm_.fail(c);
      ++p2Next_[i];
      *moved = true;
    }
  }
  while (sendsDone_ < sendsPosted_ && sendOrder_[sendsDone_]->req.done) {
    Status c = comm_.checkDone(*sendOrder_[sendsDone_]);
    if (!c.isOk()) return comm_.fail(c);
    ++sendsDone_;
    *moved = true;
  }
  return Status::ok();
}

// Marks `rank` as having sent non-finite scales (its input or error was not finite).
void CompressedOp::noteScales(size_t rank, const float* scales, size_t n) {
  if (!allFinite(scales, n)) badInput_[rank / 32] |= 1u << (rank % 32);
}

// Segment s can be served once every peer's frame for it arrived and, with compressBlock = 0,
// the frames carrying the peers' scales (the last ones).
bool CompressedOp::serverReady(size_t s) const {
  return segReady_[scaleFrame(s)] == peers_.size() && segReady_[s] == peers_.size();
}

// Builds server frames as phase-1 segments arrive, and sends them once this rank's phase-1
// frames are all posted (so each connection carries phase 1 before phase 2).
Status CompressedOp::serve() {
  int idle = 0;
  while (p2Posted_ < geo_.segs) {
    bool worked = false;
    while (served_ < geo_.segs && serverReady(served_)) {
      serveSegment(served_++);
      worked = true;
    }
    if (geo_.block == 0 && served_ == geo_.segs && worked) finishServerB0();
    OBCCL_TRY(postPhase2Ready());
    bool moved = false;
    OBCCL_TRY(pump(&moved));
    if (worked || moved) {
      idle = 0;
      continue;
    }
    Status st =
        comm_.idleWait(peers_, comm_.opDeadline(), &idle, "compressed allreduce phase 1", peers_);
    if (!st.isOk()) return comm_.fail(st);
  }
  return Status::ok();
}

CompressedOp::ServerInputs CompressedOp::serverInputs(size_t s) {
  ServerInputs in;
  for (int i = 0; i < geo_.n; ++i) {
    in.bits.push_back(signsOf(p1In(i, s), s));
    in.scales.push_back(inScales(i, s));
  }
  in.span = codec::ServerSpan{static_cast<size_t>(geo_.n), in.bits.data(), in.scales.data(),
                              s_ + s * geo_.seg};
  return in;
}

void CompressedOp::serveSegment(size_t s) {
  ServerInputs in = serverInputs(s);
  const codec::ServerSpan& span = in.span;
  const size_t len = geo_.segLen(s);
  std::memcpy(p2(geo_.r, s), badInput_.data(), 4 * geo_.words);
  if (geo_.block == 0) {
    k_.serverNorm(span, len, 0, &serverNorm_);
    return;
  }
  const size_t nb = geo_.scalesIn(s);
  std::fill(norms_.begin(), norms_.begin() + nb, codec::NormAccumulator());
  k_.serverNorm(span, len, geo_.block, norms_.data());
  float* b = p2Scales(geo_.r, s);
  for (size_t k = 0; k < nb; ++k) b[k] = codec::rmsScale(norms_[k], geo_.scaleElems(s, k, 0));
  k_.serverEncode(span, len, geo_.block, b, p2Signs(geo_.r, s), nullptr);
}

// compressBlock = 0: b_r needs the norm of the whole chunk, so signs and frames come after it.
void CompressedOp::finishServerB0() {
  const float b = codec::rmsScale(serverNorm_, geo_.chunk);
  for (size_t s = 0; s < geo_.segs; ++s) {
    ServerInputs in = serverInputs(s);
    const codec::ServerSpan& span = in.span;
    std::memcpy(p2(geo_.r, s), badInput_.data(), 4 * geo_.words);
    p2Scales(geo_.r, s)[0] = b;
    k_.serverEncode(span, geo_.segLen(s), 0, &b, p2Signs(geo_.r, s), nullptr);
  }
}

Status CompressedOp::postPhase2Ready() {
  if (!phase1Posted_) return Status::ok();
  const bool built = geo_.block > 0 || served_ == geo_.segs;
  while (built && p2Posted_ < served_) {
    size_t s = p2Posted_++;
    for (int j = 0; j < geo_.n; ++j) {
      if (j == geo_.r) continue;
      Transfer* t = &p2Send_[ti(j, s)];
      OBCCL_TRY(comm_.postSend(peerRank(j), p2(geo_.r, s), geo_.p2Bytes(s), t,
                               static_cast<uint32_t>(geo_.segs + s)));
      sendOrder_.push_back(t);
      ++sendsPosted_;
    }
  }
  return Status::ok();
}

Status CompressedOp::waitDone() {
  int idle = 0;
  auto pending = [&] {
    std::vector<int> who;
    for (int i = 0; i < geo_.n; ++i)
      if (i != geo_.r && p2Next_[i] < geo_.segs) who.push_back(peerRank(i));
    return who;
  };
  while (sendsDone_ < sendsPosted_ || !pending().empty()) {
    bool moved = false;
    OBCCL_TRY(pump(&moved));
    if (moved) {
      idle = 0;
      continue;
    }
    Status st = comm_.idleWait(peers_, comm_.opDeadline(), &idle, "compressed allreduce phase 2",
                               pending());
    if (!st.isOk()) return comm_.fail(st);
  }
  return Status::ok();
}

// Every rank now holds the same facts: which ranks sent non-finite worker scales (seen directly
// or reported in phase 2) and which server scales are non-finite. All fail alike, or none.
Status CompressedOp::agree() {
  for (int j = 0; j < geo_.n; ++j) {
    for (size_t s = 0; s < geo_.segs; ++s) {
      const auto* reported = reinterpret_cast<const uint32_t*>(p2(j, s));
      for (size_t w = 0; w < geo_.words; ++w) badInput_[w] |= reported[w];
      if (!allFinite(p2Scales(j, s), geo_.scalesIn(s))) badServer_[j / 32] |= 1u << (j % 32);
    }
  }
  std::string input = rankList(badInput_, geo_.n), server = rankList(badServer_, geo_.n);
  if (input.empty() && server.empty()) return Status::ok();
  comm_.markFailureAgreed();
  if (!input.empty())
    return invalidArgument("non-finite input on rank(s) " + input +
                           ": sendbuff or workerError holds NaN or Inf (or x + e overflowed); "
                           "error buffers left unchanged");
  return invalidArgument("non-finite server values on rank(s) " + server +
                         ": serverError holds NaN or Inf, or the average overflowed; error "
                         "buffers left unchanged");
}

// Error updates and output: per segment, the worker update reads x before the decode may
// overwrite it (in place).
void CompressedOp::finish() {
  for (int j = 0; j < geo_.n; ++j) {
    for (size_t s = 0; s < geo_.segs; ++s) {
      const size_t begin = j * geo_.chunk + s * geo_.seg, len = geo_.segLen(s);
      const size_t valid = geo_.count > begin ? std::min(geo_.count - begin, len) : 0;
      const void* x = valid > 0 ? x_ + begin * es_ : nullptr;
      k_.workerUpdate(x, dt_, valid, e_ + begin, len, geo_.block, outScales(j, s));
      if (valid > 0)
        k_.decode(p2Signs(j, s), valid, geo_.block, p2Scales(j, s), y_ + begin * es_, dt_);
    }
  }
  for (size_t s = 0; s < geo_.segs; ++s) {
    ServerInputs in = serverInputs(s);
    k_.serverEncode(in.span, geo_.segLen(s), geo_.block, p2Scales(geo_.r, s), nullptr,
                    s_ + s * geo_.seg);
  }
}

Status checkArguments(const void* send, void* recv, size_t count, obcclDataType_t dt,
                      const float* workerError, const float* serverError) {
  if (dt != obcclFloat32 && dt != obcclFloat16 && dt != obcclBfloat16)
    return invalidArgument(std::string("compressed allreduce: datatype ") + dataTypeName(dt) +
                           " is not supported (float32, float16 or bfloat16)");
  if (count == 0) return Status::ok();
  if (send == nullptr) return invalidArgument("compressed allreduce: sendbuff is NULL");
  if (recv == nullptr) return invalidArgument("compressed allreduce: recvbuff is NULL");
  if (workerError == nullptr) return invalidArgument("compressed allreduce: workerError is NULL");
  if (serverError == nullptr) return invalidArgument("compressed allreduce: serverError is NULL");
  for (const void* p : {send, static_cast<const void*>(recv), static_cast<const void*>(workerError),
                        static_cast<const void*>(serverError)})
    if (classifyPointer(p) == MemoryKind::kDevice)
      return invalidUsage("compressed allreduce: device buffers are not supported yet");
  return Status::ok();
}

}  // namespace

Result<CompressedLayout> compressedLayout(size_t count, int nranks) {
  if (nranks < 1) return invalidArgument("compressed allreduce: no ranks");
  const size_t unit = 8 * static_cast<size_t>(nranks);
  const size_t limit = static_cast<size_t>(std::numeric_limits<int64_t>::max()) / sizeof(float);
  if (count > limit - unit)
    return invalidArgument("compressed allreduce: count " + std::to_string(count) +
                           " is too large to pad");
  CompressedLayout l;
  l.count = count;
  l.padded = (count + unit - 1) / unit * unit;
  l.chunk = l.padded / static_cast<size_t>(nranks);
  return l;
}

Status compressedErrorCounts(const Comm& comm, size_t count, size_t* workerCount,
                             size_t* serverCount, const Group* group) {
  if (group == nullptr) {  // all ranks: the hierarchical schedule may apply (hierarchical.h)
    OBCCL_ASSIGN_OR_RETURN(HierPlan plan, hierarchicalPlan(comm));
    if (plan.active) return hierarchicalErrorCounts(plan, count, workerCount, serverCount);
  }
  const Group& g = group ? *group : comm.world();
  OBCCL_ASSIGN_OR_RETURN(CompressedLayout l, compressedLayout(count, g.size()));
  *workerCount = l.padded;
  *serverCount = l.chunk;
  return Status::ok();
}

Status compressedAllReduce(Comm& comm, const void* send, void* recv, size_t count,
                           obcclDataType_t datatype, float* workerError, float* serverError,
                           const Group* group) {
  const Group& g = group ? *group : comm.world();
  OBCCL_TRY(checkArguments(send, recv, count, datatype, workerError, serverError));
  if (group == nullptr) {  // all ranks: the hierarchical schedule may apply (hierarchical.h)
    OBCCL_ASSIGN_OR_RETURN(HierPlan plan, hierarchicalPlan(comm));
    if (plan.active)
      return hierarchicalCompressedAllReduce(comm, plan, send, recv, count, datatype, workerError,
                                             serverError);
  }
  OBCCL_ASSIGN_OR_RETURN(CompressedLayout layout, compressedLayout(count, g.size()));
  OBCCL_ASSIGN_OR_RETURN(const codec::Kernels* kernels, codec::kernelsByName(comm.config().codec));
  OpDesc desc{OpKind::kCompressedAllReduce, count, datatype, obcclAvg, -1, true};
  return comm.runOp(desc, [&]() -> Status {
    if (count == 0) return Status::ok();
    Geometry geo = makeGeometry(layout, g, comm.config());
    CompressedOp op(comm, g, *kernels, geo, send, recv, datatype, workerError, serverError);
    return op.run();
  });
}

}  // namespace obccl::core
