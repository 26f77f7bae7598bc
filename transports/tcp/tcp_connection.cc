#include "transports/tcp/tcp_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "transports/tcp/tcp_transport.h"
#include "util/log.h"

namespace obccl::transport {
namespace {

constexpr size_t kHeaderBytes = sizeof(FrameHeader);
// Frames gathered into one sendmsg: enough to batch many small frames into one syscall.
constexpr int kMaxFramesPerWrite = 32;

void complete(Request* req, Status status, size_t bytes) {
  req->status = std::move(status);
  req->bytes = bytes;
  req->done = true;
}

}  // namespace

std::unique_ptr<Connection> makeTcpConnection(UniqueFd fd, std::string describe) {
  return std::make_unique<TcpConnection>(std::move(fd), std::move(describe));
}

TcpConnection::TcpConnection(UniqueFd fd, std::string describe)
    : fd_(std::move(fd)), describe_(std::move(describe)) {
  if (!fd_.valid()) {
    error_ = invalidArgument(describe_ + ": no socket");
    return;
  }
  Status s = setNonBlocking(fd_.get());
  if (!s.isOk()) error_ = s.withContext(describe_);
  (void)setNoDelay(fd_.get());  // Not applicable to socketpairs; harmless there.
}

short TcpConnection::pollEvents() const {
  if (failed()) return 0;
  short events = 0;
  // POLLIN only while a receive waits: unread data for a later receive (a faster peer already
  // in the next operation) would otherwise make every poll return at once, and the caller would
  // spin while it waits on other peers. An idle connection asks for POLLRDHUP, so a hangup still
  // wakes the caller.
  if (!recvs_.empty()) {
    events |= POLLIN;
  } else if (sends_.empty()) {
    events |= POLLRDHUP;
  }
  if (!sends_.empty()) events |= POLLOUT;
  return events;
}

Status TcpConnection::fail(Status error) {
  if (failed()) return error_;
  error_ = std::move(error);
  OBCCL_WARN(kSubsysTransport, "%s", error_.message().c_str());
  for (auto& s : sends_) complete(s.req, error_, 0);
  for (auto& r : recvs_) complete(r.req, error_, 0);
  sends_.clear();
  recvs_.clear();
  // Tell the peer at once, so it fails now instead of at its deadline.
  ::shutdown(fd_.get(), SHUT_RDWR);
  return error_;
}

Status TcpConnection::postSend(const FrameHeader& header, const void* payload, Request* req) {
  if (failed()) {
    complete(req, error_, 0);
    return error_;
  }
  if (header.length > 0 && payload == nullptr)
    return invalidArgument(describe_ + ": send of " + std::to_string(header.length) +
                           " bytes with a null payload");
  req->done = false;
  req->status = Status::ok();
  req->bytes = 0;
  req->header = header;
  PendingSend s{header, static_cast<const uint8_t*>(payload),
                kHeaderBytes + static_cast<size_t>(header.length), 0, req};
  sealHeader(&s.header);  // Idempotent when the caller sealed it already.
  bool wasIdle = sends_.empty();
  sends_.push_back(s);
  // Start writing at once when nothing is queued ahead: small messages then leave without
  // waiting for the next progress() call.
  if (wasIdle) return progressSends();
  return Status::ok();
}

Status TcpConnection::postRecv(void* buf, size_t capacity, Request* req) {
  if (failed()) {
    complete(req, error_, 0);
    return error_;
  }
  if (capacity > 0 && buf == nullptr)
    return invalidArgument(describe_ + ": receive into a null buffer of " +
                           std::to_string(capacity) + " bytes");
  req->done = false;
  req->status = Status::ok();
  req->bytes = 0;
  recvs_.push_back(PendingRecv{static_cast<uint8_t*>(buf), capacity, req});
  return Status::ok();
}

Status TcpConnection::progress() {
  if (failed()) return error_;
  OBCCL_TRY(progressSends());
  return progressRecvs();
}

Status TcpConnection::progressSends() {
  while (!sends_.empty()) {
    iovec iov[2 * kMaxFramesPerWrite];
    int iovcnt = 0;
    size_t want = 0;
    for (size_t i = 0; i < sends_.size() && i < static_cast<size_t>(kMaxFramesPerWrite); ++i) {
      PendingSend& s = sends_[i];
      if (s.done < kHeaderBytes) {
        iov[iovcnt++] = {reinterpret_cast<uint8_t*>(&s.header) + s.done, kHeaderBytes - s.done};
        want += kHeaderBytes - s.done;
      }
      size_t payloadDone = s.done > kHeaderBytes ? s.done - kHeaderBytes : 0;
      size_t payloadLeft = s.total - kHeaderBytes - payloadDone;
      if (payloadLeft > 0) {
        iov[iovcnt++] = {const_cast<uint8_t*>(s.payload) + payloadDone, payloadLeft};
        want += payloadLeft;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(iovcnt);
    ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
      return fail(remoteError(describe_ + ": connection lost while sending (" +
                              std::strerror(errno) + ")"));
    }
    bytesSent_ += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (left > 0) {
      PendingSend& s = sends_.front();
      size_t take = std::min(left, s.total - s.done);
      s.done += take;
      left -= take;
      if (s.done < s.total) break;
      complete(s.req, Status::ok(), s.total - kHeaderBytes);
      sends_.pop_front();
    }
    if (static_cast<size_t>(n) < want) return Status::ok();  // Socket buffer is full.
  }
  return Status::ok();
}

Result<bool> TcpConnection::readHeader() {
  auto* dst = reinterpret_cast<uint8_t*>(&rxHeader_);
  while (rxHeaderGot_ < kHeaderBytes) {
    ssize_t n = ::recv(fd_.get(), dst + rxHeaderGot_, kHeaderBytes - rxHeaderGot_, MSG_DONTWAIT);
    if (n > 0) {
      rxHeaderGot_ += static_cast<size_t>(n);
      bytesReceived_ += static_cast<uint64_t>(n);
      continue;
    }
    if (n == 0) return fail(remoteError(describe_ + ": peer closed the connection"));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    return fail(remoteError(describe_ + ": connection lost while receiving (" +
                            std::strerror(errno) + ")"));
  }
  Status check = checkHeader(rxHeader_, describe_);
  if (!check.isOk()) return fail(check);
  return true;
}

Result<bool> TcpConnection::discardPayload() {
  uint8_t scratch[16384];
  while (rxDiscard_ > 0) {
    ssize_t n =
        ::recv(fd_.get(), scratch, std::min<uint64_t>(rxDiscard_, sizeof(scratch)), MSG_DONTWAIT);
    if (n > 0) {
      rxDiscard_ -= static_cast<uint64_t>(n);
      bytesReceived_ += static_cast<uint64_t>(n);
      continue;
    }
    if (n == 0) return fail(remoteError(describe_ + ": peer closed the connection"));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    return fail(remoteError(describe_ + ": connection lost while receiving (" +
                            std::strerror(errno) + ")"));
  }
  return true;
}

Status TcpConnection::progressRecvs() {
  if (rxDiscard_ > 0) {
    OBCCL_ASSIGN_OR_RETURN(bool discarded, discardPayload());
    if (!discarded) return Status::ok();
  }
  while (!recvs_.empty()) {
    PendingRecv& r = recvs_.front();
    if (!rxHaveHeader_) {
      OBCCL_ASSIGN_OR_RETURN(bool haveHeader, readHeader());
      if (!haveHeader) return Status::ok();
      rxHaveHeader_ = true;
      if (rxHeader_.length > r.capacity) {
        // A mismatched call, not a broken stream: this receive fails with the frame's header
        // (so the caller can say what the peer called), the payload is skipped, and the next
        // frame is read normally.
        std::string what = describe_ + ": incoming frame carries " +
                           std::to_string(rxHeader_.length) +
                           " payload bytes but the posted receive holds only " +
                           std::to_string(r.capacity) + " (mismatched calls?)";
        OBCCL_DEBUG(kSubsysTransport, "%s", what.c_str());
        r.req->header = rxHeader_;
        complete(r.req, invalidUsage(what), 0);
        recvs_.pop_front();
        rxDiscard_ = rxHeader_.length;
        rxHaveHeader_ = false;
        rxHeaderGot_ = 0;
        OBCCL_ASSIGN_OR_RETURN(bool discarded, discardPayload());
        if (!discarded) return Status::ok();
        continue;
      }
    }
    while (rxPayloadGot_ < rxHeader_.length) {
      ssize_t n =
          ::recv(fd_.get(), r.buf + rxPayloadGot_, rxHeader_.length - rxPayloadGot_, MSG_DONTWAIT);
      if (n > 0) {
        rxPayloadGot_ += static_cast<size_t>(n);
        bytesReceived_ += static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) return fail(remoteError(describe_ + ": peer closed the connection"));
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
      return fail(remoteError(describe_ + ": connection lost while receiving (" +
                              std::strerror(errno) + ")"));
    }
    r.req->header = rxHeader_;
    complete(r.req, Status::ok(), rxPayloadGot_);
    recvs_.pop_front();
    rxHaveHeader_ = false;
    rxHeaderGot_ = 0;
    rxPayloadGot_ = 0;
  }
  return Status::ok();
}

}  // namespace obccl::transport
