// The shm transport: ranks on one host (ConnectContext::hostOf equal) exchange frames through
// single-producer/single-consumer rings in POSIX shared memory.
//
// One segment per pair of ranks, created by the lower rank and holding both directions' rings
// (OBCCL_SHM_RING_BYTES each), plus one FIFO doorbell per rank and peer in /dev/shm. connect()
// takes part in two allgathers: after "created" every rank maps its peers' segments and opens
// their doorbells; after "mapped" the creators remove every name, so nothing is left in /dev/shm
// even if a process is killed later. Names: obccl-<commId>-<creator pid>-<nonce>-<rank>-<rank>.
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
