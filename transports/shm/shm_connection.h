// One shm connection: frames stream through a pair of rings in a shared segment.
//
// Wire layout in a ring: each frame is its 64-byte FrameHeader, the payload, then padding to a
// multiple of 64 bytes, so headers never straddle the end of the ring. Payloads larger than the
// ring stream through it in chunks while the peer copies them out.
//
// Waiting: progress() never blocks. When it cannot move a byte, it raises the ring's waiting flag
// and the peer writes one byte to this side's doorbell FIFO (pollFd()) when it next publishes
// data or frees space, so the caller can sleep in poll(). The doorbell also reports end-of-file
// as soon as the peer's process is gone, which is how a killed peer is noticed at once; its pid
// (kill(pid, 0) and /proc state) and the segment's "closed" flag are checked as a backstop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <string>

#include "transports/shm/shm_ring.h"
#include "transports/shm/shm_segment.h"
#include "transports/transport.h"

namespace obccl::transport::shm {

class ShmConnection : public Connection {
 public:
  // side: 0 when this rank is the lower of the pair. bellIn: this side's doorbell (read end);
  // bellOut: the peer's doorbell (opened for ringing).
  ShmConnection(ShmSegment segment, int side, Doorbell bellIn, Doorbell bellOut, int peerRank,
                pid_t peerPid);
  ~ShmConnection() override;

  Status postSend(const FrameHeader& header, const void* payload, Request* req) override;
  Status postRecv(void* buf, size_t capacity, Request* req) override;
  Status progress() override;
  int pollFd() const override { return bellIn_.fd(); }
  short pollEvents() const override;
  bool busy() const override { return !sends_.empty() || !recvs_.empty(); }
  const std::string& describe() const override { return describe_; }
  uint64_t bytesSent() const override { return bytesSent_; }
  uint64_t bytesReceived() const override { return bytesReceived_; }

 private:
  struct SendOp {
    FrameHeader header;
    const uint8_t* payload;
    uint64_t frameBytes;  // header + payload + padding
    uint64_t done;        // bytes of the frame already in the ring
    Request* req;
  };
  struct RecvOp {
    uint8_t* buf;
    size_t capacity;
    Request* req;
    bool haveHeader;
    uint64_t got;  // payload bytes copied
  };

  bool advanceSends();
  bool advanceSend(SendOp& op);
  bool advanceRecvs();
  bool advanceRecv(RecvOp& op);
  // Called while requests are pending: arms the doorbell so that the caller may sleep on it, and
  // checks on the peer when nothing moved.
  Status prepareToWait(bool moved);
  Status checkPeer(bool hungUp, std::chrono::steady_clock::time_point now);
  // Publish written bytes / free read space, ringing the peer when it sleeps on them.
  void publishSends();
  void releaseRecvs();
  Status fail(Status status);

  ShmSegment segment_;
  SegmentHeader* shared_;
  int side_;
  Doorbell bellIn_, bellOut_;
  int peerRank_;
  pid_t peerPid_;
  std::string describe_;
  RingProducer out_;
  RingConsumer in_;
  uint64_t chunk_;            // largest copy before publishing, so the peer can overlap
  uint64_t pendingSkip_ = 0;  // padding (or a rejected payload) still to drop from in_
  std::deque<SendOp> sends_;
  std::deque<RecvOp> recvs_;
  Status failed_;
  std::chrono::steady_clock::time_point lastPeerCheck_{};
  std::chrono::steady_clock::time_point lastDrain_{};
  uint64_t bytesSent_ = 0, bytesReceived_ = 0;
};

}  // namespace obccl::transport::shm
