// The shm transport: ranks on one host (ConnectContext::hostOf equal) exchange frames through
// single-producer/single-consumer rings in POSIX shared memory.
//
// One segment per pair of ranks, created by the lower rank and holding both directions' rings
// (OBCCL_SHM_RING_BYTES each), plus one FIFO doorbell per rank and peer in /dev/shm. connect()
// takes part in three allgathers: "checked" (every rank has arrived, so nothing is created for a
// job that dies before that), "created" (then every rank maps its peers' segments and opens
// their doorbells) and "mapped" (then the creators remove every name). A process killed after
// that leaves nothing in /dev/shm; one killed inside the short window leaves names carrying its
// pid, which the next connect on the host removes once they are a minute old.
// Names: obccl-<commId>-<creator pid>-<nonce>-<rank>-<rank>[.bell].
#pragma once

#include <memory>

#include "transports/transport.h"

namespace obccl::transport::shm {

class ShmTransport : public Transport {
 public:
  const char* name() const override { return "shm"; }
  // True when peer is another rank on this rank's host (ctx.hostOf).
  bool canConnect(const ConnectContext& ctx, int peer) const override;
  Status connect(const ConnectContext& ctx, const std::vector<int>& peers,
                 std::vector<std::unique_ptr<Connection>>* out) override;
};

}  // namespace obccl::transport::shm

namespace obccl::transport {
// The shm transport, for the transport factory.
std::unique_ptr<Transport> makeShmTransport();
}  // namespace obccl::transport
