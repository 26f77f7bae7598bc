// A Connection to one peer over a UCX endpoint on the communicator's shared worker.
//
// Each frame is two tagged messages: the 64-byte FrameHeader, then (when header.length > 0) the
// payload, both tagged with the frame's per-direction sequence number under a secret-derived key
// (ucx_tags.h). A receive posts both at once: the header into the op, the payload straight into
// the caller's buffer with the posted capacity, so UCX truncates (and consumes) a longer payload
// and the request fails with obcclInvalidUsage instead of overflowing. Sequence numbers in the
// tags make the FIFO order explicit rather than relying on UCX's matching order.
//
// A closing connection sends a goodbye carrying how many frames it fully sent; the peer then
// fails only what can no longer complete (a send, or a receive past that count), as a TCP EOF
// would, so a peer that finished early and left never fails a rank that is still draining.
#pragma once

#include <list>
#include <memory>
#include <string>
#include <vector>

#include "transports/transport.h"
#include "transports/ucx/ucx_request.h"
#include "transports/ucx/ucx_tags.h"
#include "transports/ucx/ucx_worker.h"

namespace obccl::transport::ucx {

struct UcxPeerParams {
  std::shared_ptr<UcxWorker> worker;
  int rank = 0;
  int peer = 0;
  uint64_t commId = 0;
  TagKey sendKey;  // this rank -> peer
  TagKey recvKey;  // peer -> this rank
};

class UcxConnection final : public Connection, public WorkerClient {
 public:
  // Creates the endpoint to the peer's worker address and posts the hello exchange.
  static Result<std::unique_ptr<UcxConnection>> create(const UcxPeerParams& params,
                                                       const std::vector<uint8_t>& peerAddress);
  ~UcxConnection() override;

  Status postSend(const FrameHeader& header, const void* payload, Request* req) override;
  Status postRecv(void* buf, size_t capacity, Request* req) override;
  Status progress() override;
  int pollFd() const override { return worker_->eventFd(); }
  short pollEvents() const override;
  bool busy() const override { return !ops_.empty(); }
  const std::string& describe() const override { return describe_; }
  uint64_t bytesSent() const override { return bytesSent_; }
  uint64_t bytesReceived() const override { return bytesReceived_; }
  void abandon() override;

  void processOps() override;
  bool hasPendingOps() const override { return !ops_.empty() || !helloDone(); }
  ucp_ep_h endpoint() const override { return ep_.get(); }
  void onEndpointError(ucs_status_t status) override;

  // Connect-time handshake: done once the peer's hello arrived and ours left.
  bool helloDone() const { return helloRecv_.done() && helloSend_.done(); }
  // The handshake's verdict once helloDone(), or the connection's failure.
  Status helloStatus() const;
  // Appends the UCX transports the endpoint uses ("tcp/eth0") to describe(); call after hello.
  void describeLanes();
  int peer() const { return peer_; }

 private:
  struct FrameOp;
  struct Hello {
    uint32_t magic = 0;
    int32_t rank = -1;
    uint64_t commId = 0;
  };
  struct Goodbye {
    uint32_t magic = 0;
    uint32_t reserved = 0;
    uint64_t framesSent = 0;  // frames below this sequence number were fully sent
  };

  UcxConnection(const UcxPeerParams& params, ucp_ep_h ep);
  void postHandshake();
  bool advance(FrameOp* op);
  Status finishRecv(const FrameOp& op);
  Status finishSend(const FrameOp& op);
  void checkPeer();
  void fail(Status status);
  void abortAll();
  uint64_t firstIncompleteSend() const;
  void teardown();
  void waitAll(std::vector<UcxRequest*> requests, const Deadline& deadline);

  std::shared_ptr<UcxWorker> worker_;
  int rank_;
  int peer_;
  uint64_t commId_;
  TagKey sendKey_;
  TagKey recvKey_;
  UcxEndpoint ep_;
  std::string describe_;

  std::list<std::unique_ptr<FrameOp>> ops_;
  uint64_t sendSeq_ = 0;
  uint64_t recvSeq_ = 0;
  uint64_t bytesSent_ = 0;
  uint64_t bytesReceived_ = 0;

  Hello helloOut_;
  Hello helloIn_;
  UcxRequest helloSend_;
  UcxRequest helloRecv_;
  std::unique_ptr<UcxWorker::Closing> farewell_;  // the goodbye receive, later the close

  Status failed_;                        // sticky
  ucs_status_t endpointError_ = UCS_OK;  // set by UCX's error callback
  bool goodbyeSeen_ = false;             // the goodbye receive completed (or was cancelled)
  bool peerGone_ = false;                // the peer's goodbye arrived
  uint64_t peerFramesSent_ = 0;
  bool aborted_ = false;
  bool abandoned_ = false;  // abandon() ran: the posted Requests are no longer ours to complete
};

}  // namespace obccl::transport::ucx
