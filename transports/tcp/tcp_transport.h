// The tcp transport: one TCP connection per peer pair, authenticated with the job secret.
// Works between any two ranks (canConnect is always true), so it is the fallback of the list.
#pragma once

#include <memory>
#include <string>

#include "transports/transport.h"
#include "util/socket.h"

namespace obccl::transport {

// Wraps a connected stream socket (TCP, or one end of a socketpair) as a Connection. describe
// names the peer in every message, e.g. "tcp to rank 3 (198.18.0.2:40123)". Headers are sealed
// on postSend (idempotent). A frame larger than the posted receive completes that receive with
// obcclInvalidUsage and its header; its payload is skipped and the connection stays usable.
// EOF, resets and corrupted headers are sticky obcclRemoteError.
std::unique_ptr<Connection> makeTcpConnection(UniqueFd fd, std::string describe);

class TcpTransport final : public Transport {
 public:
  const char* name() const override { return "tcp"; }
  bool canConnect(const ConnectContext& ctx, int peer) const override { return true; }
  // Listens on the interface chosen by ctx.ifname, exchanges addresses with ctx.allgather, then
  // the higher rank of each pair connects to the lower and both run the HMAC handshake.
  Status connect(const ConnectContext& ctx, const std::vector<int>& peers,
                 std::vector<std::unique_ptr<Connection>>* out) override;
};

std::unique_ptr<Transport> makeTcpTransport();

}  // namespace obccl::transport
