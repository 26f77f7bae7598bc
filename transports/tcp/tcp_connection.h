// TcpConnection: framed messages over one non-blocking stream socket (TCP, or a socketpair in
// tests). Sends leave in FIFO order through writev of header + payload; receives land directly
// in the posted buffer, one frame per posted receive.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "transports/transport.h"
#include "util/socket.h"

namespace obccl::transport {

class TcpConnection final : public Connection {
 public:
  TcpConnection(UniqueFd fd, std::string describe);

  Status postSend(const FrameHeader& header, const void* payload, Request* req) override;
  Status postRecv(void* buf, size_t capacity, Request* req) override;
  Status progress() override;
  int pollFd() const override { return failed() ? -1 : fd_.get(); }
  short pollEvents() const override;
  bool busy() const override { return !sends_.empty() || !recvs_.empty(); }
  const std::string& describe() const override { return describe_; }
  uint64_t bytesSent() const override { return bytesSent_; }
  uint64_t bytesReceived() const override { return bytesReceived_; }

 private:
  struct PendingSend {
    FrameHeader header;
    const uint8_t* payload;
    size_t total;  // sizeof(FrameHeader) + header.length
    size_t done;   // bytes of this frame already written
    Request* req;
  };
  struct PendingRecv {
    uint8_t* buf;
    size_t capacity;
    Request* req;
  };

  bool failed() const { return !error_.isOk(); }
  Status progressSends();
  Status progressRecvs();
  // Reads the current frame's header (returns false while incomplete).
  Result<bool> readHeader();
  // Skips the rest of an oversize frame's payload (returns false while bytes remain).
  Result<bool> discardPayload();
  // Records a sticky failure and completes every posted request with it.
  Status fail(Status error);

  UniqueFd fd_;
  std::string describe_;
  Status error_;
  std::deque<PendingSend> sends_;
  std::deque<PendingRecv> recvs_;
  FrameHeader rxHeader_;
  size_t rxHeaderGot_ = 0;
  bool rxHaveHeader_ = false;
  size_t rxPayloadGot_ = 0;
  uint64_t rxDiscard_ = 0;  // payload bytes of a rejected frame still to skip
  uint64_t bytesSent_ = 0;
  uint64_t bytesReceived_ = 0;
};

}  // namespace obccl::transport
