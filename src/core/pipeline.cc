// runPipeline: the engine of the ring and chain collectives. Frames leave for one peer and arrive
// from another in FIFO order; a bounded window of receives is posted ahead, each send waits for
// the receive it forwards, and received segments are reduced while later ones are in flight.
#include <algorithm>

#include "core/algorithms.h"

namespace obccl::core {
namespace {

constexpr size_t kWindow = 4;  // receives in flight, and scratch slots

}  // namespace

Status runPipeline(Comm& comm, int sendPeer, int recvPeer, const std::vector<OutUnit>& outs,
                   const std::vector<InUnit>& ins, size_t slotBytes, const ProcessFn& process,
                   const std::string& what) {
  const size_t nIn = ins.size(), nOut = outs.size();
  std::vector<Transfer> tin(nIn), tout(nOut);
  uint8_t* slots = nullptr;
  for (const InUnit& u : ins)
    if (u.dst == nullptr) slots = comm.scratch(kScratchCore0, kWindow * slotBytes);
  std::vector<int> peers;
  if (sendPeer >= 0 && nOut > 0) peers.push_back(sendPeer);
  if (recvPeer >= 0 && nIn > 0 && recvPeer != sendPeer) peers.push_back(recvPeer);
  size_t inPosted = 0, inDone = 0, outPosted = 0, outDone = 0;
  int idle = 0;
  while (inDone < nIn || outDone < nOut) {
    while (inPosted < nIn && inPosted - inDone < kWindow &&
           (ins[inPosted].afterOut < 0 || static_cast<size_t>(ins[inPosted].afterOut) < outDone)) {
      const InUnit& u = ins[inPosted];
      uint8_t* dst = u.dst ? u.dst : slots + (inPosted % kWindow) * slotBytes;
      OBCCL_TRY(
          comm.postRecv(recvPeer, dst, u.bytes, &tin[inPosted], static_cast<uint32_t>(inPosted)));
      ++inPosted;
    }
    while (outPosted < nOut &&
           (outs[outPosted].afterIn < 0 || static_cast<size_t>(outs[outPosted].afterIn) < inDone)) {
      const OutUnit& u = outs[outPosted];
      OBCCL_TRY(comm.postSend(sendPeer, u.src, u.bytes, &tout[outPosted],
                              static_cast<uint32_t>(outPosted)));
      ++outPosted;
    }
    bool moved = false;
    Status s = comm.progressPeers(peers, &moved);
    if (!s.isOk()) return comm.fail(s);
    bool advanced = false;
    while (inDone < inPosted && tin[inDone].req.done) {
      Status c = comm.checkDone(tin[inDone]);
      if (!c.isOk()) return comm.fail(c);
      process(inDone, static_cast<const uint8_t*>(tin[inDone].data));
      ++inDone;
      advanced = true;
    }
    while (outDone < outPosted && tout[outDone].req.done) {
      Status c = comm.checkDone(tout[outDone]);
      if (!c.isOk()) return comm.fail(c);
      ++outDone;
      advanced = true;
    }
    if (moved || advanced) {
      idle = 0;
      continue;
    }
    std::vector<int> pending;
    if (inDone < nIn) pending.push_back(recvPeer);
    if (outDone < nOut && (pending.empty() || sendPeer != recvPeer)) pending.push_back(sendPeer);
    s = comm.idleWait(peers, comm.opDeadline(), &idle, what, pending);
    if (!s.isOk()) return comm.fail(s);
  }
  return Status::ok();
}

}  // namespace obccl::core
