// Owners of UCX operations and endpoints: a UcxRequest holds one operation in flight (the
// request handle until it completes, then its final status and, for a receive, the sender's
// length); a UcxEndpoint holds a ucp_ep_h until it is closed.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <cstdint>

namespace obccl::transport::ucx {

class UcxRequest {
 public:
  UcxRequest() = default;
  ~UcxRequest();
  UcxRequest(const UcxRequest&) = delete;
  UcxRequest& operator=(const UcxRequest&) = delete;

  // Posts a tagged send of len bytes at buf; buf must stay valid until done().
  void send(ucp_ep_h ep, const void* buf, size_t len, uint64_t tag);
  // Posts a receive of exactly this tag into buf (at most len bytes).
  void recv(ucp_worker_h worker, void* buf, size_t len, uint64_t tag);
  // Starts closing ep (force: without waiting for the peer); done() when UCX has released it.
  void close(ucp_ep_h ep, bool force);

  // Polls UCX; true once the operation is complete (or was never started).
  bool poll();
  // Asks UCX to cancel a pending receive; poll() then reports UCS_ERR_CANCELED.
  void cancel(ucp_worker_h worker);
  // Hands a pending operation back to UCX, which releases it when it completes.
  void release();

  bool started() const { return started_; }
  bool done() const { return !started_ || request_ == nullptr; }
  ucs_status_t status() const { return status_; }
  // Bytes the sender sent (receives only; valid once done()).
  size_t length() const { return length_; }

 private:
  void start(ucs_status_ptr_t result, bool isRecv);

  void* request_ = nullptr;
  bool started_ = false;
  bool isRecv_ = false;
  ucs_status_t status_ = UCS_OK;
  size_t length_ = 0;
};

class UcxEndpoint {
 public:
  UcxEndpoint() = default;
  explicit UcxEndpoint(ucp_ep_h ep) : ep_(ep) {}
  // An endpoint nobody closed is force-closed here, the close request handed back to UCX.
  ~UcxEndpoint();
  UcxEndpoint(const UcxEndpoint&) = delete;
  UcxEndpoint& operator=(const UcxEndpoint&) = delete;

  ucp_ep_h get() const { return ep_; }
  // Starts closing (force: without the peer's cooperation, failing pending sends) into req,
  // which completes once UCX has released the endpoint; get() is nullptr from now on.
  void close(bool force, UcxRequest* req);

 private:
  ucp_ep_h ep_ = nullptr;
};

}  // namespace obccl::transport::ucx
