// The UCX transport: one UCX context and worker per communicator, one endpoint per peer, framed
// messages as secret-tagged UCX tag sends. UCX picks the wire (InfiniBand, RoCE, TCP, ...) from
// its own environment (UCX_TLS, UCX_NET_DEVICES); docs/UCX.md says how to steer and check it.
#pragma once

#include <memory>
#include <vector>

#include "transports/transport.h"

namespace obccl::transport {

namespace ucx {
class UcxWorker;
}

class UcxTransport final : public Transport {
 public:
  UcxTransport();
  ~UcxTransport() override;

  const char* name() const override { return "ucx"; }
  // True for every other rank: UCX decides how to reach it. Deliberately not a local probe, so
  // every rank makes the same choice; a rank whose UCX cannot start fails connect() loudly.
  bool canConnect(const ConnectContext& ctx, int peer) const override;
  // Exchanges worker addresses through the (authenticated) bootstrap allgather, creates the
  // endpoints and runs a hello exchange with each peer before returning.
  Status connect(const ConnectContext& ctx, const std::vector<int>& peers,
                 std::vector<std::unique_ptr<Connection>>* out) override;

 private:
  Status ensureWorker(int nranks);
  Status exchangeAddresses(const ConnectContext& ctx, bool haveWorker,
                           std::vector<std::vector<uint8_t>>* addresses);

  std::shared_ptr<ucx::UcxWorker> worker_;
  uint32_t epoch_ = 0;  // counts connect() calls, which every rank makes alike
};

// The factory makeTransport("ucx") uses.
std::unique_ptr<Transport> makeUcxTransport();

}  // namespace obccl::transport
