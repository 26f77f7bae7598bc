#include "transports/tcp/tcp_transport.h"

namespace obccl::transport {

Status TcpTransport::connect(const ConnectContext& ctx, const std::vector<int>& peers,
                             std::vector<std::unique_ptr<Connection>>* out) {
  return internalError("tcp transport: connect is not implemented yet");
}

std::unique_ptr<Transport> makeTcpTransport() { return std::make_unique<TcpTransport>(); }

}  // namespace obccl::transport
