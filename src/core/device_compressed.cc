// The compressed allreduce on device buffers (device_path.h): which engine runs a call, the
// one-time decision between the direct and the staged path, and the direct engine.
//
// Direct engine, rank r of n (Np padded elements, c = Np/n, bpc scales per chunk), everything
// enqueued on the caller's stream, nothing waited for on the host:
//   workerEncode          x, e -> packed signs of u, worker scales, this rank's non-finite flag
//   exchange              alltoall of the signs (chunk j to rank j); the scales travel with the
//                         flag: one scale per vector -> allgather of [flag | a_r], blocks ->
//                         alltoall of each chunk's scales plus allgather of the flag
//   serverNorm/Encode     this rank's chunk -> [flag | server scales] and packed server signs
//   exchange              allgather of the server signs and of [flag | server scales]
//   collectFlags          every rank's worker and server flags and their OR, the same on every
//                         rank because every rank ORs the same gathered words
//   workerUpdate, serverEncode (s in place), decode into recvbuff, each skipped on the device
//                         when the OR is set: error buffers and recvbuff stay unchanged
//   verdict               the flags are copied to a pinned ring slot for deviceAsyncError
//
// This file calls no synchronising CUDA function (perf/gpu/emulate_integration.sh greps for them;
// the staged engines, which do wait, are in device_staged.cc). The only waits a direct call can
// make are in DeviceContext: growing its memory (the first call of a larger size) and a full
// ring of unread verdicts (64 calls the device has not finished).
#if OBCCL_HAVE_CUDA

#include "core/device_compressed.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/comm.h"
#include "core/hierarchical.h"
#include "core/op.h"
#include "device/device.h"
#include "device/nccl_path.h"
#include "device/path_support.h"
#include "topo/topology.h"
#include "util/log.h"
#include "util/params.h"

namespace obccl::core {
namespace {

constexpr uint32_t kPeerInfoMagic = 0x0bcc0dec;

// Carves aligned pieces out of one allocation; with base null it only measures.
class Carver {
 public:
  explicit Carver(uint8_t* base) : base_(base) {}
  template <class T>
  T* take(size_t count) {
    size_t at = used_;
    used_ += (count * sizeof(T) + 255) / 256 * 256;
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  size_t used() const { return used_; }

 private:
  uint8_t* base_;
  size_t used_ = 0;
};

// Device memory of one direct call.
struct DirectBuffers {
  uint8_t* wbits;  // Np/8: this rank's packed worker signs
  uint8_t* rbits;  // Np/8: every rank's signs of this rank's chunk
  float* wscales;  // worker scales (blocks)
  int* p1meta;     // [flag | a_r] (one scale) or [flag] (blocks)
  int* rmeta;      // n x [flag | a_i] or n flags
  float* rscales;  // n x bpc worker scales of this chunk (blocks)
  int* smeta;      // [flag | bpc server scales]
  uint8_t* sbits;  // c/8
  uint8_t* gbits;  // Np/8: every rank's server signs
  int* gmeta;      // n x [flag | bpc server scales]
  int* flags;      // n worker flags, n server flags, their OR
  void* norm;      // norm scratch
  size_t normBytes;

  void carve(Carver& c, size_t np, size_t chunk, size_t n, size_t bpc, size_t workerScales,
             size_t normBytesNeeded) {
    wbits = c.take<uint8_t>(np / 8);
    rbits = c.take<uint8_t>(np / 8);
    wscales = c.take<float>(workerScales);
    p1meta = c.take<int>(2);
    rmeta = c.take<int>(2 * n);
    rscales = c.take<float>(n * bpc);
    smeta = c.take<int>(1 + bpc);
    sbits = c.take<uint8_t>(chunk / 8);
    gbits = c.take<uint8_t>(np / 8);
    gmeta = c.take<int>(n * (1 + bpc));
    flags = c.take<int>(2 * n + 1);
    norm = c.take<uint8_t>(normBytesNeeded);
    normBytes = normBytesNeeded;
  }
};

Result<DevicePeerInfo> localPeerInfo() {
  DevicePeerInfo info;
  info.magic = kPeerInfoMagic;
  OBCCL_ASSIGN_OR_RETURN(DevicePreference pref,
                         parseDevicePreference(paramString("OBCCL_DEVICE_PATH")));
  if (deviceExchangeFactoryForTesting()) pref = kPreferTestExchange;
  info.preference = pref;
  info.ncclBuilt = device::ncclAvailable() ? 1 : 0;
  OBCCL_ASSIGN_OR_RETURN(info.device, device::currentDevice());
  OBCCL_ASSIGN_OR_RETURN(std::string bus, device::pciBusId(info.device));
  std::snprintf(info.busId, sizeof(info.busId), "%s", bus.c_str());
  std::snprintf(info.hostName, sizeof(info.hostName), "%s", topo::hostName().c_str());
  std::snprintf(info.hostId, sizeof(info.hostId), "%s", topo::localHostId().c_str());
  return info;
}

std::string ranksWith(const std::vector<DevicePeerInfo>& ranks, int32_t pref) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i].preference == pref) s += (s.empty() ? "" : ", ") + std::to_string(i);
  return s;
}

bool sameGpu(const DevicePeerInfo& a, const DevicePeerInfo& b) {
  bool sameHost = std::strncmp(a.hostName, b.hostName, sizeof(a.hostName)) == 0 ||
                  std::strncmp(a.hostId, b.hostId, sizeof(a.hostId)) == 0;
  return sameHost && std::strncmp(a.busId, b.busId, sizeof(a.busId)) == 0;
}

Status createExchange(Comm& comm, DeviceContext& ctx, const DevicePathChoice& choice,
                      const device::NcclUniqueIdBytes& id) {
  std::unique_ptr<DeviceExchange> ex;
  switch (choice.exchange) {
    case DeviceExchangeKind::kNccl: {
      OBCCL_ASSIGN_OR_RETURN(
          ex, makeNcclExchange(comm.nranks(), comm.rank(), id, comm.config().timeoutMs));
      break;
    }
    case DeviceExchangeKind::kHost:
      ex = makeHostExchange(comm);
      break;
    case DeviceExchangeKind::kTest: {
      DeviceExchangeFactory factory = deviceExchangeFactoryForTesting();
      if (!factory) return invalidUsage("device path: the test exchange factory was removed");
      OBCCL_ASSIGN_OR_RETURN(ex, factory(comm));
      break;
    }
    case DeviceExchangeKind::kNone:
      break;
  }
  OBCCL_INFO(kSubsysDevice, "compressed allreduce on device buffers: %s path (%s)%s",
             choice.path == DevicePath::kDirect ? (ex ? ex->name() : "?") : "staged",
             choice.reason.c_str(),
             ex && ex->hostSyncFree() ? ", no host waits inside a call" : "");
  return ctx.setPath(choice.path, choice.reason, std::move(ex));
}

Status checkCompressedType(obcclDataType_t dt) {
  if (dt == obcclFloat32 || dt == obcclFloat16 || dt == obcclBfloat16) return Status::ok();
  return invalidArgument(std::string("compressed allreduce: datatype ") + dataTypeName(dt) +
                         " is not supported (float32, float16 or bfloat16)");
}

}  // namespace

Result<DevicePreference> parseDevicePreference(const std::string& value) {
  if (value.empty() || value == "auto") return kPreferAuto;
  if (value == "nccl") return kPreferNccl;
  if (value == "staged") return kPreferStaged;
  if (value == "host-exchange") return kPreferHostExchange;
  return invalidArgument("OBCCL_DEVICE_PATH = '" + value +
                         "' is not auto, nccl, staged or host-exchange");
}

Result<DevicePathChoice> decideDevicePath(const std::vector<DevicePeerInfo>& ranks) {
  DevicePathChoice c;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i].magic != kPeerInfoMagic)
      return invalidUsage("device path: rank " + std::to_string(i) +
                          " sent no device description (a host-buffer call met a device one?)");
  // The strongest preference of any rank wins: staged, host-exchange, test, nccl, auto.
  if (std::string who = ranksWith(ranks, kPreferStaged); !who.empty()) {
    c.reason = "OBCCL_DEVICE_PATH=staged on rank(s) " + who;
    return c;
  }
  c.path = DevicePath::kDirect;
  if (std::string who = ranksWith(ranks, kPreferHostExchange); !who.empty()) {
    c.exchange = DeviceExchangeKind::kHost;
    c.reason = "OBCCL_DEVICE_PATH=host-exchange on rank(s) " + who;
    return c;
  }
  const auto tests = std::count_if(ranks.begin(), ranks.end(), [](const DevicePeerInfo& i) {
    return i.preference == kPreferTestExchange;
  });
  if (tests > 0) {
    if (static_cast<size_t>(tests) != ranks.size())
      return invalidUsage("device path: a test exchange is installed on rank(s) " +
                          ranksWith(ranks, kPreferTestExchange) + " only");
    c.exchange = DeviceExchangeKind::kTest;
    c.reason = "test exchange";
    return c;
  }
  const std::string forced = ranksWith(ranks, kPreferNccl);
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i].ncclBuilt != 0) continue;
    if (!forced.empty())
      return invalidUsage("OBCCL_DEVICE_PATH=nccl on rank(s) " + forced + " but rank " +
                          std::to_string(i) + " was built without NCCL");
    c.path = DevicePath::kStaged;
    c.reason = "rank " + std::to_string(i) + " was built without NCCL";
    return c;
  }
  c.exchange = DeviceExchangeKind::kNccl;
  if (!forced.empty()) {
    c.reason = "OBCCL_DEVICE_PATH=nccl on rank(s) " + forced;
    return c;
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (!sameGpu(ranks[i], ranks[j])) continue;
      c.path = DevicePath::kStaged;
      c.exchange = DeviceExchangeKind::kNone;
      c.reason =
          "ranks " + std::to_string(j) + " and " + std::to_string(i) + " share GPU " +
          std::string(ranks[i].busId, strnlen(ranks[i].busId, sizeof(ranks[i].busId))) + " on " +
          std::string(ranks[i].hostName, strnlen(ranks[i].hostName, sizeof(ranks[i].hostName)));
      return c;
    }
  }
  c.reason = "every rank has its own GPU";
  return c;
}

Status ensureDevicePath(Comm& comm, DeviceContext& ctx) {
  if (ctx.path() != DevicePath::kUndecided) return Status::ok();
  if (comm.nranks() == 1) return ctx.setPath(DevicePath::kDirect, "one rank", makeSelfExchange());
  OBCCL_ASSIGN_OR_RETURN(DevicePeerInfo mine, localPeerInfo());
  std::vector<DevicePeerInfo> all(static_cast<size_t>(comm.nranks()));
  DevicePathChoice choice;
  device::NcclUniqueIdBytes id{};
  OpDesc desc{OpKind::kInternal, sizeof(DevicePeerInfo), obcclUint8, obcclSum, -1, false};
  OBCCL_TRY(comm.runOp(desc, [&]() -> Status {
    OBCCL_TRY(comm.allGather(&mine, all.data(), sizeof(mine), obcclUint8));
    Result<DevicePathChoice> decided = decideDevicePath(all);
    if (!decided.isOk()) {
      comm.markFailureAgreed();  // every rank decided on the same infos
      return decided.status();
    }
    choice = decided.value();
    if (choice.exchange != DeviceExchangeKind::kNccl) return Status::ok();
    if (comm.rank() == 0) {
      OBCCL_ASSIGN_OR_RETURN(id, device::ncclNewUniqueId());
    }
    return comm.broadcast(id.data(), id.data(), id.size(), obcclUint8, 0);
  }));
  return createExchange(comm, ctx, choice, id);
}

Status runDirect(Comm& comm, DeviceContext& ctx, const CompressedLayout& layout,
                 const DeviceCall& call, const DeviceCompressedOptions& options) {
  const size_t n = static_cast<size_t>(comm.nranks());
  const size_t np = layout.padded, c = layout.chunk;
  const size_t block = static_cast<size_t>(std::max(comm.config().compressBlock, 0));
  const bool one = block == 0;  // one worker scale for the vector
  const device::ScaleLayout w = device::ScaleLayout::worker(np, comm.nranks(), block);
  const device::ScaleLayout s = device::ScaleLayout::server(c, block);
  const device::ScaleLayout g = device::ScaleLayout::gathered(np, comm.nranks(), block);
  const size_t bpc = s.blocksPerChunk();
  const size_t normBytes = std::max(device::normScratchBytes(w), device::normScratchBytes(s));
  Carver measure(nullptr);
  DirectBuffers b{};
  b.carve(measure, np, c, n, bpc, w.numScales(), normBytes);
  OBCCL_ASSIGN_OR_RETURN(uint8_t * base, ctx.deviceMemory(kDeviceCompressed, measure.used()));
  Carver carver(base);
  b.carve(carver, np, c, n, bpc, w.numScales(), normBytes);
  DeviceExchange& ex = *ctx.exchange();
  void* st = call.stream;
  float* workerScales = one ? reinterpret_cast<float*>(b.p1meta + 1) : b.wscales;
  float* serverScales = reinterpret_cast<float*>(b.smeta + 1);
  const device::RankPacked in{b.rbits, c / 8,
                              one ? reinterpret_cast<const float*>(b.rmeta + 1) : b.rscales,
                              one ? 2 * sizeof(int) : bpc * sizeof(float), static_cast<int>(n)};
  const device::RankPacked gathered{b.gbits, c / 8, reinterpret_cast<const float*>(b.gmeta + 1),
                                    (1 + bpc) * sizeof(float), static_cast<int>(n)};
  OpDesc desc{OpKind::kCompressedAllReduce, call.count, call.datatype, obcclAvg, -1, true};
  return comm.runOp(desc, [&]() -> Status {
    OBCCL_TRY(ctx.begin(st));
    OBCCL_TRY(device::workerEncode(call.send, call.datatype, call.count, call.workerError, w,
                                   b.norm, b.normBytes, {nullptr, workerScales, b.p1meta}, b.wbits,
                                   st));
    OBCCL_TRY(ex.alltoall(b.wbits, b.rbits, c / 8, st));
    if (one) {
      OBCCL_TRY(ex.allgather(b.p1meta, b.rmeta, 2 * sizeof(int), st));
    } else {
      OBCCL_TRY(ex.alltoall(b.wscales, b.rscales, bpc * sizeof(float), st));
      OBCCL_TRY(ex.allgather(b.p1meta, b.rmeta, sizeof(int), st));
    }
    OBCCL_TRY(device::serverNorm(in, call.serverError, s, b.norm, b.normBytes,
                                 {nullptr, serverScales, b.smeta}, st));
    OBCCL_TRY(device::serverEncode(in, call.serverError, s, serverScales, b.sbits, nullptr, st));
    OBCCL_TRY(ex.allgather(b.sbits, b.gbits, c / 8, st));
    OBCCL_TRY(ex.allgather(b.smeta, b.gmeta, (1 + bpc) * sizeof(int), st));
    OBCCL_TRY(device::collectFlags({b.rmeta, n, one ? size_t{2} : size_t{1}}, {b.gmeta, n, 1 + bpc},
                                   b.flags, st));
    const int* skip = b.flags + 2 * n;
    // The worker update reads x before the decode may overwrite it (in place).
    OBCCL_TRY(device::workerUpdate(call.send, call.datatype, call.count, call.workerError, w,
                                   workerScales, nullptr, st, skip));
    OBCCL_TRY(device::serverEncode(in, call.serverError, s, serverScales, nullptr, call.serverError,
                                   st, skip));
    OBCCL_TRY(device::decode(gathered, g, call.count, call.recv, call.datatype, st, skip));
    if (options.skipFlag != nullptr) *options.skipFlag = skip;
    if (options.reportSkip)
      OBCCL_TRY(ctx.recordDirectCall(comm.seq(), static_cast<int>(n), b.flags, st));
    return ctx.end(st);
  });
}

Status deviceCompressedAllReduce(Comm& comm, DeviceContext& ctx, const void* send, void* recv,
                                 size_t count, obcclDataType_t datatype, float* workerError,
                                 float* serverError, void* stream,
                                 const DeviceCompressedOptions& options) {
  if (options.skipFlag != nullptr) *options.skipFlag = nullptr;
  OBCCL_TRY(checkCompressedType(datatype));
  if (count == 0)  // the host engine's no-op (still one operation on every rank)
    return compressedAllReduce(comm, send, recv, 0, datatype, workerError, serverError);
  if (ctx.aborted()) return systemError("compressed allreduce: communicator was aborted");
  DeviceCall call{send, recv, count, datatype, workerError, serverError, stream};
  OBCCL_ASSIGN_OR_RETURN(HierPlan plan, hierarchicalPlan(comm));
  if (plan.active) return runFullyStaged(comm, ctx, call);
  OBCCL_TRY(ensureDevicePath(comm, ctx));
  OBCCL_ASSIGN_OR_RETURN(CompressedLayout layout, compressedLayout(count, comm.nranks()));
  if (ctx.path() == DevicePath::kDirect) return runDirect(comm, ctx, layout, call, options);
  return runStaged(comm, ctx, layout, call);
}

}  // namespace obccl::core

#endif  // OBCCL_HAVE_CUDA
