#include "transports/ucx/ucx_connection.h"

#include <poll.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "util/log.h"

namespace obccl::transport::ucx {
namespace {

constexpr uint32_t kHelloMagic = 0x0bcc4e11u;
constexpr uint32_t kGoodbyeMagic = 0x0bccb1e5u;
// How long a closing connection waits for its goodbye to leave and its endpoint to close.
constexpr int64_t kCloseWaitMs = 1000;
// How long a connection closed with requests pending lets its goodbye leave before forcing.
constexpr int64_t kGoodbyeWaitMs = 100;

}  // namespace

struct UcxConnection::FrameOp {
  bool isSend = false;
  uint64_t seq = 0;
  Request* req = nullptr;
  FrameHeader header;  // sent from here, or received into here
  size_t capacity = 0;
  bool headerSeen = false;
  UcxRequest headerMsg;
  UcxRequest payloadMsg;
};

Result<std::unique_ptr<UcxConnection>> UcxConnection::create(
    const UcxPeerParams& params, const std::vector<uint8_t>& peerAddress) {
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.address = reinterpret_cast<const ucp_address_t*>(peerAddress.data());
  // PEER mode: a dead peer fails the endpoint (and calls the handler) instead of hanging it.
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler = params.worker->errorHandler();
  ucp_ep_h handle = nullptr;
  ucs_status_t st = ucp_ep_create(params.worker->get(), &ep, &handle);
  if (st != UCS_OK) {
    return systemError("ucx: cannot create an endpoint to rank " + std::to_string(params.peer) +
                       ": " + ucsMessage(st));
  }
  std::unique_ptr<UcxConnection> conn(new UcxConnection(params, handle));
  conn->postHandshake();
  return conn;
}

UcxConnection::UcxConnection(const UcxPeerParams& params, ucp_ep_h ep)
    : worker_(params.worker),
      rank_(params.rank),
      peer_(params.peer),
      commId_(params.commId),
      sendKey_(params.sendKey),
      recvKey_(params.recvKey),
      ep_(ep),
      describe_("ucx to rank " + std::to_string(params.peer)) {
  worker_->attach(this);
}

UcxConnection::~UcxConnection() {
  // Detached first: a closing connection is never processed, and its endpoint's late errors are
  // dropped by the worker.
  worker_->detach(this);
  teardown();
}

short UcxConnection::pollEvents() const { return POLLIN; }

void UcxConnection::postHandshake() {
  helloOut_ = Hello{kHelloMagic, rank_, commId_};
  ucp_worker_h w = worker_->get();
  helloRecv_.recv(w, &helloIn_, sizeof(helloIn_), makeTag(recvKey_, TagKind::kHello, 0));
  farewell_ = std::make_unique<UcxWorker::Closing>();
  farewell_->inbox.resize(sizeof(Goodbye));
  farewell_->recv.recv(w, farewell_->inbox.data(), farewell_->inbox.size(),
                       makeTag(recvKey_, TagKind::kGoodbye, 0));
  helloSend_.send(ep_.get(), &helloOut_, sizeof(helloOut_), makeTag(sendKey_, TagKind::kHello, 0));
}

Status UcxConnection::helloStatus() const {
  if (!failed_.isOk()) return failed_;
  if (helloSend_.status() != UCS_OK) {
    return remoteError(describe_ + ": handshake send failed: " + ucsMessage(helloSend_.status()));
  }
  if (helloRecv_.status() != UCS_OK) {
    return remoteError(describe_ +
                       ": handshake receive failed: " + ucsMessage(helloRecv_.status()));
  }
  if (helloRecv_.length() != sizeof(Hello) || helloIn_.magic != kHelloMagic ||
      helloIn_.rank != peer_ || helloIn_.commId != commId_) {
    return remoteError(describe_ + ": handshake answered by rank " + std::to_string(helloIn_.rank) +
                       " of another communicator");
  }
  return Status::ok();
}

void UcxConnection::describeLanes() {
  if (ep_.get() == nullptr) return;
  char* text = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&text, &size);
  if (stream == nullptr) return;
  ucp_ep_print_info(ep_.get(), stream);
  std::fclose(stream);
  // Lines read "#   lane[0]:  1:tcp/eth0.0 md[1] -> ..."; keep "tcp/eth0" once per transport.
  std::istringstream lines(text ? text : "");
  std::free(text);
  std::string line, lanes;
  while (std::getline(lines, line)) {
    size_t at = line.find("lane[");
    if (at == std::string::npos) continue;
    std::istringstream words(line.substr(line.find(':', at) + 1));
    std::string resource;
    words >> resource;
    resource = resource.substr(resource.find(':') + 1);
    resource = resource.substr(0, resource.rfind('.'));
    if (("," + lanes + ",").find("," + resource + ",") == std::string::npos) {
      lanes += (lanes.empty() ? "" : ",") + resource;
    }
  }
  if (!lanes.empty()) describe_ += " (" + lanes + ")";
}

Status UcxConnection::postSend(const FrameHeader& header, const void* payload, Request* req) {
  if (!failed_.isOk()) return failed_;
  if (header.length > 0 && payload == nullptr) {
    return invalidArgument(describe_ + ": send of " + std::to_string(header.length) +
                           " payload bytes from a null buffer");
  }
  auto op = std::make_unique<FrameOp>();
  op->isSend = true;
  op->seq = sendSeq_++;
  op->req = req;
  // Copy the fields only: the struct's tail padding must not carry stray bytes onto the wire.
  std::memcpy(static_cast<void*>(&op->header), &header, offsetof(FrameHeader, headerCrc));
  sealHeader(&op->header);
  *req = Request{};
  op->headerMsg.send(ep_.get(), &op->header, sizeof(FrameHeader),
                     makeTag(sendKey_, TagKind::kHeader, op->seq));
  if (header.length > 0) {
    op->payloadMsg.send(ep_.get(), payload, header.length,
                        makeTag(sendKey_, TagKind::kPayload, op->seq));
  }
  ops_.push_back(std::move(op));
  return Status::ok();
}

Status UcxConnection::postRecv(void* buf, size_t capacity, Request* req) {
  if (!failed_.isOk()) return failed_;
  if (capacity > 0 && buf == nullptr) {
    return invalidArgument(describe_ + ": receive of up to " + std::to_string(capacity) +
                           " bytes into a null buffer");
  }
  auto op = std::make_unique<FrameOp>();
  op->seq = recvSeq_++;
  op->req = req;
  op->capacity = capacity;
  *req = Request{};
  ucp_worker_h w = worker_->get();
  op->headerMsg.recv(w, &op->header, sizeof(FrameHeader),
                     makeTag(recvKey_, TagKind::kHeader, op->seq));
  // Posted at once with the caller's capacity: a rendezvous payload lands in place, and a longer
  // one is truncated by UCX (and so consumed) rather than written past the buffer.
  op->payloadMsg.recv(w, buf, capacity, makeTag(recvKey_, TagKind::kPayload, op->seq));
  ops_.push_back(std::move(op));
  return Status::ok();
}

Status UcxConnection::progress() {
  worker_->progress();
  return failed_;
}

void UcxConnection::onEndpointError(ucs_status_t status) {
  // Called from inside ucp_worker_progress: record only; processOps() acts on it.
  if (endpointError_ == UCS_OK) endpointError_ = status;
}

bool UcxConnection::advance(FrameOp* op) {
  op->headerMsg.poll();
  if (!op->isSend && op->headerMsg.done() && !op->headerSeen) {
    op->headerSeen = true;
    // No payload message follows an empty or unreadable header: withdraw the payload receive.
    bool payloadFollows = op->headerMsg.status() == UCS_OK &&
                          op->headerMsg.length() == sizeof(FrameHeader) &&
                          checkHeader(op->header, describe_).isOk() && op->header.length > 0;
    if (!payloadFollows) op->payloadMsg.cancel(worker_->get());
  }
  op->payloadMsg.poll();
  return op->headerMsg.done() && op->payloadMsg.done();
}

Status UcxConnection::finishSend(const FrameOp& op) {
  ucs_status_t st =
      op.headerMsg.status() != UCS_OK ? op.headerMsg.status() : op.payloadMsg.status();
  if (st == UCS_OK) {
    bytesSent_ += sizeof(FrameHeader) + op.header.length;
    op.req->bytes = op.header.length;
    return Status::ok();
  }
  if (!failed_.isOk()) return failed_;
  Status s = remoteError(describe_ + ": send of frame " + std::to_string(op.seq) +
                         " failed: " + ucsMessage(st));
  fail(s);
  return s;
}

Status UcxConnection::finishRecv(const FrameOp& op) {
  const FrameHeader& h = op.header;
  if (op.headerMsg.status() != UCS_OK) {
    if (!failed_.isOk()) return failed_;
    Status s = remoteError(describe_ + ": receive of frame " + std::to_string(op.seq) +
                           " failed: " + ucsMessage(op.headerMsg.status()));
    fail(s);
    return s;
  }
  Status s = op.headerMsg.length() == sizeof(FrameHeader)
                 ? checkHeader(h, describe_)
                 : remoteError("garbled frame from " + describe_ + ": header message of " +
                               std::to_string(op.headerMsg.length()) + " bytes");
  if (!s.isOk()) {
    fail(s);
    return s;
  }
  op.req->header = h;
  if (h.length > op.capacity) {
    // Not sticky: UCX consumed the truncated payload, so the stream stays in step.
    return invalidUsage(describe_ + ": frame of op " + std::to_string(h.op) + " seq " +
                        std::to_string(h.seq) + " step " + std::to_string(h.step) + " carries " +
                        std::to_string(h.length) + " payload bytes but the receive was posted " +
                        "for " + std::to_string(op.capacity) + " (mismatched calls)");
  }
  if (h.length > 0 && op.payloadMsg.status() != UCS_OK) {
    if (!failed_.isOk()) return failed_;
    s = remoteError(describe_ + ": payload receive of frame " + std::to_string(op.seq) +
                    " failed: " + ucsMessage(op.payloadMsg.status()));
  } else if (h.length > 0 && op.payloadMsg.length() != h.length) {
    s = remoteError("garbled frame from " + describe_ + ": header announces " +
                    std::to_string(h.length) + " payload bytes, " +
                    std::to_string(op.payloadMsg.length()) + " arrived");
  }
  if (!s.isOk()) {
    fail(s);
    return s;
  }
  bytesReceived_ += sizeof(FrameHeader) + h.length;
  op.req->bytes = h.length;
  return Status::ok();
}

void UcxConnection::abandon() {
  if (abandoned_) return;
  abandoned_ = true;
  ucp_worker_h w = worker_->get();
  std::vector<UcxRequest*> mine;
  for (auto& op : ops_) {
    if (!op->isSend) {
      op->headerMsg.cancel(w);
      op->payloadMsg.cancel(w);
    }
    mine.push_back(&op->headerMsg);
    mine.push_back(&op->payloadMsg);
  }
  waitAll(mine, Deadline::afterMs(0));
  // Headers live in the ops; payloads are the caller's. A receive that matched a rendezvous, or
  // a send whose payload is still in flight, stops using it only when the endpoint goes: force
  // it closed and wait, briefly, for UCX to let go (the worker is shared, so a later close of
  // another connection would otherwise still move these bytes). Zero-length frames (error
  // frames) are left to leave with the goodbye.
  bool callerMemory = false;
  for (const auto& op : ops_) callerMemory = callerMemory || !op->payloadMsg.done();
  if (!callerMemory) return;
  if (failed_.isOk()) fail(remoteError(describe_ + ": abandoned after a failed operation"));
  abortAll();
  waitAll(mine, Deadline::afterMs(kCloseWaitMs));
  for (UcxRequest* r : mine) {
    if (!r->done()) {
      OBCCL_WARN(kSubsysTransport, "%s: a UCX request outlived the abandoned operation",
                 describe_.c_str());
      break;
    }
  }
}

void UcxConnection::processOps() {
  if (abandoned_) return;  // the posted Requests belong to a caller that has moved on
  helloRecv_.poll();
  helloSend_.poll();
  if (!goodbyeSeen_ && farewell_->recv.started() && farewell_->recv.poll()) {
    goodbyeSeen_ = true;
    Goodbye bye;
    std::memcpy(&bye, farewell_->inbox.data(), sizeof(bye));
    // A cancelled goodbye receive is no news from the peer.
    peerGone_ = farewell_->recv.status() == UCS_OK && farewell_->recv.length() == sizeof(Goodbye) &&
                bye.magic == kGoodbyeMagic;
    peerFramesSent_ = bye.framesSent;
    if (peerGone_) {
      OBCCL_DEBUG(kSubsysTransport, "%s: peer closed after sending %llu frames", describe_.c_str(),
                  static_cast<unsigned long long>(peerFramesSent_));
    }
  }
  for (int pass = 0; pass < 2; ++pass) {
    // Requests complete in posting order in each direction, as on a stream: UCX may finish a
    // small frame before a large one posted earlier, but a caller (the core's error path, for
    // one) may take a frame's completion to mean that everything before it has gone too.
    bool sendBlocked = false;
    bool recvBlocked = false;
    for (auto it = ops_.begin(); it != ops_.end();) {
      FrameOp* op = it->get();
      bool& blocked = op->isSend ? sendBlocked : recvBlocked;
      if (!advance(op) || blocked) {
        blocked = true;
        ++it;
        continue;
      }
      Request* req = op->req;
      req->status = op->isSend ? finishSend(*op) : finishRecv(*op);
      req->done = true;
      it = ops_.erase(it);
    }
    checkPeer();
    if (failed_.isOk() || aborted_) break;
    abortAll();  // then reap at once what the cancellation completed
  }
}

void UcxConnection::checkPeer() {
  if (!failed_.isOk()) return;
  if (endpointError_ != UCS_OK && !peerGone_) {
    fail(remoteError(describe_ + ": " + ucsMessage(endpointError_) + " (rank " +
                     std::to_string(peer_) + " died or the network failed)"));
    return;
  }
  if (!peerGone_) return;
  for (const auto& op : ops_) {
    if (op->isSend || op->seq >= peerFramesSent_) {
      fail(remoteError(describe_ + ": rank " + std::to_string(peer_) +
                       " closed its connection after sending " + std::to_string(peerFramesSent_) +
                       " frames, while this rank " +
                       (op->isSend ? "was still sending to it"
                                   : "still expected frame " + std::to_string(op->seq))));
      return;
    }
  }
}

void UcxConnection::fail(Status status) {
  if (!failed_.isOk()) return;
  failed_ = std::move(status);
  OBCCL_WARN(kSubsysTransport, "%s", failed_.message().c_str());
}

void UcxConnection::abortAll() {
  aborted_ = true;
  ucp_worker_h w = worker_->get();
  for (auto& op : ops_) {
    op->headerMsg.cancel(w);
    op->payloadMsg.cancel(w);
  }
  helloRecv_.cancel(w);
  // Sends cannot be cancelled one by one; a forced close completes them with an error, so no
  // request keeps using a caller's buffer after it is reported done.
  if (ep_.get() != nullptr) {
    auto closing = std::make_unique<UcxWorker::Closing>();
    ep_.close(/*force=*/true, &closing->close);
    worker_->adoptClosing(std::move(closing));
  }
}

uint64_t UcxConnection::firstIncompleteSend() const {
  uint64_t first = sendSeq_;
  for (const auto& op : ops_) {
    if (op->isSend && op->seq < first) first = op->seq;
  }
  return first;
}

void UcxConnection::waitAll(std::vector<UcxRequest*> requests, const Deadline& deadline) {
  for (int spins = 0;; ++spins) {
    worker_->drain();
    bool all = true;
    for (UcxRequest* r : requests) all = r->poll() && all;
    if (all || deadline.expired()) return;
    if (spins > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void UcxConnection::teardown() {
  ucp_worker_h w = worker_->get();
  helloRecv_.cancel(w);
  std::vector<UcxRequest*> mine = {&helloSend_, &helloRecv_};
  for (auto& op : ops_) {
    op->headerMsg.cancel(w);
    op->payloadMsg.cancel(w);
    mine.push_back(&op->headerMsg);
    mine.push_back(&op->payloadMsg);
  }
  bool idle = ops_.empty() && helloSend_.done();
  if (ep_.get() != nullptr) {
    if (failed_.isOk() && endpointError_ == UCS_OK && !peerGone_) {
      // The goodbye says which frames the peer can still expect from this side.
      Goodbye bye{kGoodbyeMagic, 0, firstIncompleteSend()};
      const auto* bytes = reinterpret_cast<const uint8_t*>(&bye);
      farewell_->message.assign(bytes, bytes + sizeof(bye));
      farewell_->send.send(ep_.get(), farewell_->message.data(), farewell_->message.size(),
                           makeTag(sendKey_, TagKind::kGoodbye, 0));
    }
    // Graceful when idle, so the goodbye is flushed out. Forced when a request is pending, so
    // that UCX stops using the caller's buffers now rather than when the peer gets round to it;
    // the goodbye, queued behind those requests, then gets a short chance to leave first.
    if (!idle) waitAll({&farewell_->send}, Deadline::afterMs(kGoodbyeWaitMs));
    ep_.close(/*force=*/!idle, &farewell_->close);
  }
  worker_->adoptClosing(std::move(farewell_));
  if (idle) return;
  // Cancelled receives and force-closed sends complete locally; wait for that, briefly.
  waitAll(mine, Deadline::afterMs(kCloseWaitMs));
  for (UcxRequest* r : mine) {
    if (!r->done()) {
      OBCCL_WARN(kSubsysTransport, "%s: a UCX request outlived the connection's close",
                 describe_.c_str());
      break;
    }
  }
}

}  // namespace obccl::transport::ucx
