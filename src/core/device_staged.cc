// The staged engine of the compressed allreduce on device buffers (device_path.h): the device
// kernels do the passes over the data, and only packed signs and scales (1/32 of fp32 data) go
// through pinned memory and the host transports. The frames are byte for byte those of the host
// engine (compressed_allreduce.cc: segments, [scales | signs] in phase 1, [bad-rank words |
// scales | signs] in phase 2, the same steps, order and agreement), so a rank with host buffers
// and a rank with device buffers can meet in one call. Two host waits per call: after the worker
// pass and after the server pass.
#if OBCCL_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/comm.h"
#include "core/device_compressed.h"
#include "core/op.h"
#include "device/device.h"

namespace obccl::core {

StagedGeometry stagedGeometry(const CompressedLayout& layout, int nranks, int rank,
                              int compressBlock, size_t segmentBytes) {
  StagedGeometry geo;
  geo.n = nranks;
  geo.r = rank;
  geo.count = layout.count;
  geo.padded = layout.padded;
  geo.chunk = layout.chunk;
  geo.block = static_cast<size_t>(std::max(compressBlock, 0));
  const size_t unit = geo.block > 0 ? geo.block : 8;
  const size_t want = std::max<size_t>(segmentBytes / sizeof(float), unit);
  geo.seg = std::min(want / unit * unit, geo.chunk);
  geo.segs = (geo.chunk + geo.seg - 1) / geo.seg;
  geo.words = (static_cast<size_t>(geo.n) + 31) / 32;
  return geo;
}

namespace {

constexpr size_t kSlotAlign = 64;

bool allFinite(const float* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

std::string rankList(const std::vector<uint32_t>& set, int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    if (set[i / 32] & (1u << (i % 32))) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

template <class T>
T* carve(uint8_t*& at, size_t count) {
  T* p = reinterpret_cast<T*>(at);
  at += (count * sizeof(T) + 255) / 256 * 256;
  return p;
}

class StagedOp {
 public:
  StagedOp(Comm& comm, DeviceContext& ctx, const StagedGeometry& geo, const DeviceCall& call)
      : comm_(comm),
        ctx_(ctx),
        geo_(geo),
        call_(call),
        w_(device::ScaleLayout::worker(geo.padded, geo.n, geo.block)),
        s_(device::ScaleLayout::server(geo.chunk, geo.block)),
        g_(device::ScaleLayout::gathered(geo.padded, geo.n, geo.block)),
        bpc_(s_.blocksPerChunk()) {}

  Status run();

 private:
  size_t slot() const { return (geo_.p2Bytes(0) + kSlotAlign - 1) / kSlotAlign * kSlotAlign; }
  uint8_t* p1Out(size_t j, size_t s) { return frames_ + (j * geo_.segs + s) * slot(); }
  uint8_t* p1In(size_t i, size_t s) {
    if (static_cast<int>(i) == geo_.r) return p1Out(i, s);
    return frames_ + ((geo_.n + i) * geo_.segs + s) * slot();
  }
  uint8_t* p2(size_t j, size_t s) { return frames_ + ((2 * geo_.n + j) * geo_.segs + s) * slot(); }
  float* p2Scales(size_t j, size_t s) {
    return reinterpret_cast<float*>(p2(j, s) + 4 * geo_.words);
  }
  uint8_t* p2Signs(size_t j, size_t s) { return p2(j, s) + 4 * geo_.words + 4 * geo_.scalesIn(s); }
  size_t ti(size_t peer, size_t s) const { return peer * geo_.segs + s; }
  // Offset in bits of segment s of chunk j, in bytes.
  size_t bitsAt(size_t j, size_t s) const { return (j * geo_.chunk + s * geo_.seg) / 8; }

  Status allocate();
  Status encodeWorker();
  Status postReceives();
  Status sendPhase1();
  Status serve();
  Status sendPhase2();
  Status wait(bool phase2);
  Status agree();
  Status finish();

  Comm& comm_;
  DeviceContext& ctx_;
  const StagedGeometry geo_;
  const DeviceCall call_;
  const device::ScaleLayout w_, s_, g_;
  const size_t bpc_;

  uint8_t* frames_ = nullptr;
  // Pinned: the worker's signs and scales, the server inputs and outputs, the gathered result.
  uint8_t *hBits_, *srvBits_, *sBitsH_, *gBits_;
  float *hScales_, *srvScales_, *sScalesH_, *gScales_;
  // Device.
  uint8_t *dWBits_, *dRBits_, *dSBits_, *dGBits_;
  float *dWScales_, *dRScales_, *dSScales_, *dGScales_;
  int *dWFlag_, *dSFlag_;
  void* dNorm_ = nullptr;
  size_t normBytes_ = 0;

  std::vector<Transfer> p1Send_, p1Recv_, p2Send_, p2Recv_;
  std::vector<uint32_t> badInput_, badServer_;
};

Status StagedOp::allocate() {
  const size_t np = geo_.padded, c = geo_.chunk, n = static_cast<size_t>(geo_.n);
  const size_t frames = 3 * n * geo_.segs;
  OBCCL_ASSIGN_OR_RETURN(frames_, ctx_.pinned(kPinnedFrames, frames * slot()));
  const size_t pinnedBytes = 3 * (np / 8 + 256) + (c / 8 + 256) +
                             (w_.numScales() + 2 * n * bpc_ + bpc_) * sizeof(float) + 4 * 256;
  OBCCL_ASSIGN_OR_RETURN(uint8_t * h, ctx_.pinned(kPinnedPacked, pinnedBytes));
  hBits_ = carve<uint8_t>(h, np / 8);
  srvBits_ = carve<uint8_t>(h, np / 8);
  gBits_ = carve<uint8_t>(h, np / 8);
  sBitsH_ = carve<uint8_t>(h, c / 8);
  hScales_ = carve<float>(h, w_.numScales());
  srvScales_ = carve<float>(h, n * bpc_);
  gScales_ = carve<float>(h, n * bpc_);
  sScalesH_ = carve<float>(h, bpc_);
  normBytes_ = std::max(device::normScratchBytes(w_), device::normScratchBytes(s_));
  const size_t deviceBytes = 4 * (np / 8 + 256) + (c / 8 + 256) + normBytes_ + 256 +
                             (w_.numScales() + 2 * n * bpc_ + bpc_) * sizeof(float) + 6 * 256;
  OBCCL_ASSIGN_OR_RETURN(uint8_t * d, ctx_.deviceMemory(kDeviceCompressed, deviceBytes));
  dWBits_ = carve<uint8_t>(d, np / 8);
  dRBits_ = carve<uint8_t>(d, np / 8);
  dGBits_ = carve<uint8_t>(d, np / 8);
  dSBits_ = carve<uint8_t>(d, c / 8);
  dWScales_ = carve<float>(d, w_.numScales());
  dRScales_ = carve<float>(d, n * bpc_);
  dGScales_ = carve<float>(d, n * bpc_);
  dSScales_ = carve<float>(d, bpc_);
  dWFlag_ = carve<int>(d, 1);
  dSFlag_ = carve<int>(d, 1);
  dNorm_ = carve<uint8_t>(d, normBytes_);
  const size_t transfers = n * geo_.segs;
  p1Send_.resize(transfers);
  p1Recv_.resize(transfers);
  p2Send_.resize(transfers);
  p2Recv_.resize(transfers);
  badInput_.assign(geo_.words, 0);
  badServer_.assign(geo_.words, 0);
  return Status::ok();
}

Status StagedOp::run() {
  OBCCL_TRY(allocate());
  OBCCL_TRY(encodeWorker());
  OBCCL_TRY(postReceives());
  OBCCL_TRY(sendPhase1());
  OBCCL_TRY(wait(false));
  OBCCL_TRY(serve());
  OBCCL_TRY(sendPhase2());
  OBCCL_TRY(wait(true));
  OBCCL_TRY(agree());
  return finish();
}

// Worker pass on the device; its signs and scales come back to pinned memory.
Status StagedOp::encodeWorker() {
  void* st = call_.stream;
  OBCCL_TRY(device::workerEncode(call_.send, call_.datatype, call_.count, call_.workerError, w_,
                                 dNorm_, normBytes_, {nullptr, dWScales_, dWFlag_}, dWBits_, st));
  OBCCL_TRY(device::copyAsync(hBits_, dWBits_, geo_.padded / 8, st));
  OBCCL_TRY(device::copyAsync(hScales_, dWScales_, w_.numScales() * sizeof(float), st));
  return device::streamSynchronize(st);
}

// Per peer, in the order it sends: its phase-1 frames, then its phase-2 frames.
Status StagedOp::postReceives() {
  for (int i = 0; i < geo_.n; ++i) {
    if (i == geo_.r) continue;
    for (size_t s = 0; s < geo_.segs; ++s)
      OBCCL_TRY(comm_.postRecv(i, p1In(i, s), geo_.p1Bytes(s), &p1Recv_[ti(i, s)],
                               static_cast<uint32_t>(s)));
    for (size_t s = 0; s < geo_.segs; ++s)
      OBCCL_TRY(comm_.postRecv(i, p2(i, s), geo_.p2Bytes(s), &p2Recv_[ti(i, s)],
                               static_cast<uint32_t>(geo_.segs + s)));
  }
  return Status::ok();
}

// Frames [scales | signs]; with one scale per vector only a chunk's last frame carries a_r (the
// host engine sends the others before the norm is complete, with 0 in the slot).
Status StagedOp::sendPhase1() {
  for (int j = 0; j < geo_.n; ++j) {
    for (size_t s = 0; s < geo_.segs; ++s) {
      uint8_t* frame = p1Out(j, s);
      float* scales = reinterpret_cast<float*>(frame);
      if (geo_.block == 0) {
        scales[0] = s + 1 == geo_.segs ? hScales_[0] : 0.0f;
      } else {
        std::memcpy(scales, hScales_ + j * bpc_ + geo_.firstBlock(s),
                    geo_.scalesIn(s) * sizeof(float));
      }
      std::memcpy(frame + 4 * geo_.scalesIn(s), hBits_ + bitsAt(j, s), geo_.segLen(s) / 8);
      if (j == geo_.r) continue;
      OBCCL_TRY(
          comm_.postSend(j, frame, geo_.p1Bytes(s), &p1Send_[ti(j, s)], static_cast<uint32_t>(s)));
    }
  }
  return Status::ok();
}

Status StagedOp::wait(bool phase2) {
  std::vector<Transfer*> ts;
  for (int i = 0; i < geo_.n; ++i) {
    if (i == geo_.r) continue;
    for (size_t s = 0; s < geo_.segs; ++s) {
      ts.push_back(&p1Send_[ti(i, s)]);
      ts.push_back(phase2 ? &p2Recv_[ti(i, s)] : &p1Recv_[ti(i, s)]);
      if (phase2) ts.push_back(&p2Send_[ti(i, s)]);
    }
  }
  return comm_.waitAll(ts.data(), ts.size(), comm_.opDeadline(),
                       phase2 ? "compressed allreduce phase 2" : "compressed allreduce phase 1");
}

// Notes ranks with non-finite worker scales (as the host engine: the scales of this rank's chunk
// that reached it), gathers every rank's frames for this chunk and runs the server pass on the
// device.
Status StagedOp::serve() {
  const size_t c8 = geo_.chunk / 8;
  for (int i = 0; i < geo_.n; ++i) {
    for (size_t s = 0; s < geo_.segs; ++s) {
      const float* scales = reinterpret_cast<const float*>(p1In(i, s));
      if ((geo_.block > 0 || s + 1 == geo_.segs) && !allFinite(scales, geo_.scalesIn(s)))
        badInput_[i / 32] |= 1u << (i % 32);
      if (geo_.block == 0) {
        if (s + 1 == geo_.segs) srvScales_[i] = scales[0];
      } else {
        std::memcpy(srvScales_ + i * bpc_ + geo_.firstBlock(s), scales,
                    geo_.scalesIn(s) * sizeof(float));
      }
      std::memcpy(srvBits_ + i * c8 + s * geo_.seg / 8, p1In(i, s) + 4 * geo_.scalesIn(s),
                  geo_.segLen(s) / 8);
    }
  }
  void* st = call_.stream;
  const size_t n = static_cast<size_t>(geo_.n);
  OBCCL_TRY(device::copyAsync(dRBits_, srvBits_, n * c8, st));
  OBCCL_TRY(device::copyAsync(dRScales_, srvScales_, n * bpc_ * sizeof(float), st));
  const device::RankPacked in{dRBits_, 0, dRScales_, 0, geo_.n};
  OBCCL_TRY(device::serverNorm(in, call_.serverError, s_, dNorm_, normBytes_,
                               {nullptr, dSScales_, dSFlag_}, st));
  OBCCL_TRY(device::serverEncode(in, call_.serverError, s_, dSScales_, dSBits_, nullptr, st));
  OBCCL_TRY(device::copyAsync(sScalesH_, dSScales_, bpc_ * sizeof(float), st));
  OBCCL_TRY(device::copyAsync(sBitsH_, dSBits_, c8, st));
  return device::streamSynchronize(st);
}

// Frames [bad-rank words | server scales | server signs] to every peer.
Status StagedOp::sendPhase2() {
  for (size_t s = 0; s < geo_.segs; ++s) {
    uint8_t* frame = p2(geo_.r, s);
    std::memcpy(frame, badInput_.data(), 4 * geo_.words);
    float* scales = p2Scales(geo_.r, s);
    if (geo_.block == 0) {
      scales[0] = sScalesH_[0];
    } else {
      std::memcpy(scales, sScalesH_ + geo_.firstBlock(s), geo_.scalesIn(s) * sizeof(float));
    }
    std::memcpy(p2Signs(geo_.r, s), sBitsH_ + s * geo_.seg / 8, geo_.segLen(s) / 8);
  }
  for (size_t s = 0; s < geo_.segs; ++s) {
    for (int j = 0; j < geo_.n; ++j) {
      if (j == geo_.r) continue;
      OBCCL_TRY(comm_.postSend(j, p2(geo_.r, s), geo_.p2Bytes(s), &p2Send_[ti(j, s)],
                               static_cast<uint32_t>(geo_.segs + s)));
    }
  }
  return Status::ok();
}

// The host engine's agreement, word for word.
Status StagedOp::agree() {
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

// Every rank's server signs and scales to the device, then the error updates and the decode,
// enqueued on the stream (the call returns without waiting for them).
Status StagedOp::finish() {
  const size_t c8 = geo_.chunk / 8, n = static_cast<size_t>(geo_.n);
  for (size_t j = 0; j < n; ++j) {
    for (size_t s = 0; s < geo_.segs; ++s) {
      std::memcpy(gBits_ + j * c8 + s * geo_.seg / 8, p2Signs(j, s), geo_.segLen(s) / 8);
      if (geo_.block == 0) {
        gScales_[j] = p2Scales(j, s)[0];
      } else {
        std::memcpy(gScales_ + j * bpc_ + geo_.firstBlock(s), p2Scales(j, s),
                    geo_.scalesIn(s) * sizeof(float));
      }
    }
  }
  void* st = call_.stream;
  OBCCL_TRY(device::copyAsync(dGBits_, gBits_, n * c8, st));
  OBCCL_TRY(device::copyAsync(dGScales_, gScales_, n * bpc_ * sizeof(float), st));
  // The worker update reads x before the decode may overwrite it (in place).
  OBCCL_TRY(device::workerUpdate(call_.send, call_.datatype, call_.count, call_.workerError, w_,
                                 dWScales_, nullptr, st));
  const device::RankPacked in{dRBits_, 0, dRScales_, 0, geo_.n};
  OBCCL_TRY(
      device::serverEncode(in, call_.serverError, s_, dSScales_, nullptr, call_.serverError, st));
  const device::RankPacked gathered{dGBits_, 0, dGScales_, 0, geo_.n};
  return device::decode(gathered, g_, call_.count, call_.recv, call_.datatype, st);
}

}  // namespace

Status runStaged(Comm& comm, DeviceContext& ctx, const CompressedLayout& layout,
                 const DeviceCall& call) {
  const StagedGeometry geo = stagedGeometry(
      layout, comm.nranks(), comm.rank(), comm.config().compressBlock, comm.config().segmentBytes);
  OpDesc desc{OpKind::kCompressedAllReduce, call.count, call.datatype, obcclAvg, -1, true};
  return comm.runOp(desc, [&]() -> Status {
    OBCCL_TRY(ctx.begin(call.stream));
    StagedOp op(comm, ctx, geo, call);
    Status st = op.run();
    Status end = ctx.end(call.stream);
    OBCCL_TRY(st);
    return end;
  });
}

// The hierarchical schedule on device buffers: the whole call through pinned memory and the host
// engine (hierarchical.h), which decides the error-buffer sizes.
Status runFullyStaged(Comm& comm, DeviceContext& ctx, const DeviceCall& call) {
  size_t workerCount = 0, serverCount = 0;
  OBCCL_TRY(compressedErrorCounts(comm, call.count, &workerCount, &serverCount));
  const size_t xBytes = call.count * dataTypeSize(call.datatype);
  const size_t eBytes = workerCount * sizeof(float), sBytes = serverCount * sizeof(float);
  OBCCL_ASSIGN_OR_RETURN(uint8_t * base, ctx.pinned(kPinnedPacked, 2 * xBytes + eBytes + sBytes));
  uint8_t* x = base;
  uint8_t* y = x + xBytes;
  float* e = reinterpret_cast<float*>(y + xBytes);
  float* se = e + workerCount;
  void* st = call.stream;
  OBCCL_TRY(ctx.begin(st));
  OBCCL_TRY(device::copyAsync(x, call.send, xBytes, st));
  OBCCL_TRY(device::copyAsync(e, call.workerError, eBytes, st));
  OBCCL_TRY(device::copyAsync(se, call.serverError, sBytes, st));
  OBCCL_TRY(device::streamSynchronize(st));
  Status result = compressedAllReduce(comm, x, y, call.count, call.datatype, e, se);
  if (result.isOk()) {
    OBCCL_TRY(device::copyAsync(call.recv, y, xBytes, st));
    OBCCL_TRY(device::copyAsync(call.workerError, e, eBytes, st));
    OBCCL_TRY(device::copyAsync(call.serverError, se, sBytes, st));
  }
  OBCCL_TRY(ctx.end(st));
  return result;
}

}  // namespace obccl::core

#endif  // OBCCL_HAVE_CUDA
