// RAII owners of the UCX context and worker of one communicator, and the worker's progress
// engine: every connection of the communicator shares the worker, so progress and the wake-up
// file descriptor are worker-wide.
#pragma once

#include <ucp/api/ucp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transports/ucx/ucx_request.h"
#include "util/status.h"

namespace obccl::transport::ucx {

// "Connection reset by remote peer (UCS_ERR_CONNECTION_RESET)".
std::string ucsMessage(ucs_status_t status);

// Owns a ucp_context_h. UCX reads its own configuration (UCX_TLS, UCX_NET_DEVICES, ...) from the
// environment here, through ucp_config_read.
class UcxContext {
 public:
  // estimatedEps sizes UCX's internal tables; wakeup asks for UCP_FEATURE_WAKEUP.
  static Result<std::shared_ptr<UcxContext>> create(int estimatedEps, bool wakeup);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;

  ucp_context_h get() const { return context_; }
  bool wakeup() const { return wakeup_; }

 private:
  UcxContext(ucp_context_h context, bool wakeup) : context_(context), wakeup_(wakeup) {}
  ucp_context_h context_;
  bool wakeup_;
};

// The side of a connection the worker's progress engine sees.
class WorkerClient {
 public:
  virtual ~WorkerClient() = default;
  // Completes whatever UCX finished for this connection; never blocks.
  virtual void processOps() = 0;
  // True while the caller waits on one of this connection's requests.
  virtual bool hasPendingOps() const = 0;
  // The endpoint this connection owns (nullptr once closed), and UCX's verdict that it failed.
  virtual ucp_ep_h endpoint() const = 0;
  virtual void onEndpointError(ucs_status_t status) = 0;
};

// Owns a ucp_worker_h (and keeps its context alive), its packed address and its event fd.
class UcxWorker {
 public:
  static Result<std::shared_ptr<UcxWorker>> create(std::shared_ptr<UcxContext> context);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  ucp_worker_h get() const { return worker_; }
  // The packed worker address that peers pass to ucp_ep_create.
  const std::vector<uint8_t>& address() const { return address_; }
  // The wake-up fd (POLLIN), or -1 when UCX offers none.
  int eventFd() const { return eventFd_; }

  void attach(WorkerClient* client);
  void detach(WorkerClient* client);
  // The error handler every endpoint of this worker is created with. It routes UCX's callback
  // through the worker to the connection that owns the endpoint, so a callback for an endpoint
  // whose connection is already gone (a close still in flight) is dropped, never dangling.
  ucp_err_handler_t errorHandler();

  // One pass of the engine: drains UCX events, lets every attached connection complete its
  // requests, and when any request is still pending leaves the event fd armed (or signalled, so
  // that a poller returns at once and calls progress again). Never blocks.
  void progress();
  // Drains UCX events only (used while tearing a connection down).
  void drain();

  // The requests that see a connection out: its goodbye to the peer, the close of its endpoint,
  // and the receive of the peer's goodbye. None may be waited for (each can need the peer to make
  // progress), so a closing connection hands them, with their buffers, to the worker.
  struct Closing {
    std::vector<uint8_t> message;  // the goodbye `send` reads
    UcxRequest send;
    UcxRequest close;
    std::vector<uint8_t> inbox;  // where `recv` puts the peer's goodbye
    UcxRequest recv;
  };
  // Keeps a Closing alive until UCX completes all three (a peer's late goodbye is then matched,
  // not left over as an unexpected message), or until the worker is destroyed.
  void adoptClosing(std::unique_ptr<Closing> closing);

 private:
  UcxWorker(std::shared_ptr<UcxContext> context, ucp_worker_h worker)
      : context_(std::move(context)), worker_(worker) {}
  bool anyPending() const;
  void reapClosing();
  static void onError(void* arg, ucp_ep_h ep, ucs_status_t status);

  std::shared_ptr<UcxContext> context_;
  ucp_worker_h worker_;
  std::vector<uint8_t> address_;
  int eventFd_ = -1;
  bool armFailedLogged_ = false;
  std::vector<WorkerClient*> clients_;
  std::vector<std::unique_ptr<Closing>> closing_;
};

}  // namespace obccl::transport::ucx
