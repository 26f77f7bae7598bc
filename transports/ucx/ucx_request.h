// One UCX tagged operation in flight, owned: the request handle until it completes, then its
// final status (and, for a receive, the sender's length).
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

}  // namespace obccl::transport::ucx
