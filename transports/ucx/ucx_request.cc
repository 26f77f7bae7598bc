#include "transports/ucx/ucx_request.h"

namespace obccl::transport::ucx {
namespace {

constexpr ucp_tag_t kExactMatch = ~ucp_tag_t{0};

}  // namespace

UcxRequest::~UcxRequest() {
  // Owners cancel and wait first; an operation still pending here goes back to UCX.
  release();
}

void UcxRequest::release() {
  if (request_ != nullptr) ucp_request_free(request_);
  request_ = nullptr;
}

void UcxRequest::start(ucs_status_ptr_t result, bool isRecv) {
  started_ = true;
  isRecv_ = isRecv;
  if (result == nullptr) {
    status_ = UCS_OK;
  } else if (UCS_PTR_IS_ERR(result)) {
    status_ = UCS_PTR_STATUS(result);
  } else {
    request_ = result;
    status_ = UCS_INPROGRESS;
  }
}

void UcxRequest::send(ucp_ep_h ep, const void* buf, size_t len, uint64_t tag) {
  ucp_request_param_t param{};
  start(ucp_tag_send_nbx(ep, buf, len, tag, &param), false);
}

void UcxRequest::recv(ucp_worker_h worker, void* buf, size_t len, uint64_t tag) {
  // Always get a request back: UCX 1.13 leaves recv_info unset when a receive completes at once
  // from its unexpected queue, and the length is what tells a truncated header apart.
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  start(ucp_tag_recv_nbx(worker, buf, len, tag, kExactMatch, &param), true);
}

void UcxRequest::close(ucp_ep_h ep, bool force) {
  ucp_request_param_t param{};
  if (force) {
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  }
  start(ucp_ep_close_nbx(ep, &param), false);
}

bool UcxRequest::poll() {
  if (done()) return true;
  ucs_status_t st;
  if (isRecv_) {
    ucp_tag_recv_info_t info{};
    st = ucp_tag_recv_request_test(request_, &info);
    if (st != UCS_INPROGRESS) length_ = info.length;
  } else {
    st = ucp_request_check_status(request_);
  }
  if (st == UCS_INPROGRESS) return false;
  ucp_request_free(request_);
  request_ = nullptr;
  status_ = st;
  return true;
}

void UcxRequest::cancel(ucp_worker_h worker) {
  if (request_ != nullptr && isRecv_) ucp_request_cancel(worker, request_);
}

UcxEndpoint::~UcxEndpoint() {
  if (ep_ == nullptr) return;
  UcxRequest req;
  close(/*force=*/true, &req);
}

void UcxEndpoint::close(bool force, UcxRequest* req) {
  if (ep_ == nullptr) return;
  req->close(ep_, force);
  ep_ = nullptr;
}

}  // namespace obccl::transport::ucx
