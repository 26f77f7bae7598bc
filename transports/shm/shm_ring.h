// Single-producer/single-consumer byte rings in shared memory, and the layout of the segment
// that holds the two rings (one per direction) of a pair of ranks.
//
// Counters grow without wrapping (2^64 bytes are never reached); a position in the data area is
// counter & (capacity - 1). The producer publishes with a release store of head, the consumer
// frees space with a release store of tail, so each side sees the other's bytes complete.
// The waiting flags let a side that is about to sleep ask the other to ring its doorbell.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace obccl::transport::shm {

static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared counters must be address-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared flags must be address-free");

// One direction's counters, each on its own cache line so the two sides do not false-share.
struct RingControl {
  alignas(64) std::atomic<uint64_t> head{0};             // written by the producer only
  alignas(64) std::atomic<uint64_t> tail{0};             // written by the consumer only
  alignas(64) std::atomic<uint32_t> consumerWaiting{0};  // consumer sets, producer clears
  alignas(64) std::atomic<uint32_t> producerWaiting{0};  // producer sets, consumer clears
};

constexpr uint64_t kSegmentMagic = 0x6f6263636c73686dull;  // "obcclshm"
constexpr uint32_t kSegmentVersion = 1;
constexpr size_t kPageBytes = 4096;

// The first page of a pair's segment. Side 0 is the lower rank (the creator), side 1 the higher.
struct SegmentHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t reserved;
  uint64_t ringBytes;  // capacity of each ring, a power of two
  uint64_t commId;
  int32_t rank[2];
  std::atomic<uint32_t> closed[2];  // side i closed its connection normally
};

// Byte offsets inside a segment: header page, control page, ring 0 (side 0 -> 1), ring 1.
constexpr size_t kControlOffset = kPageBytes;
constexpr size_t kDataOffset = 2 * kPageBytes;
inline size_t segmentBytes(uint64_t ringBytes) { return kDataOffset + 2 * ringBytes; }
static_assert(sizeof(SegmentHeader) <= kPageBytes && 2 * sizeof(RingControl) <= kPageBytes,
              "segment header and controls fit one page each");

// Waking protocol, for either flag. The sleeper, finding the flag down, raises it, drains its
// doorbell, and (after a seq_cst fence) looks at the ring again before it sleeps. The waker,
// after publishing and a seq_cst fence, lowers a raised flag and writes one doorbell byte. So
// either the sleeper sees the new bytes or the waker sees the flag: no wake-up is lost. A byte
// can arrive for an event the sleeper already handled; such a spurious wake-up costs one extra
// progress() call, and the sleeper's periodic drain removes the byte.
inline bool armFlag(std::atomic<uint32_t>& flag) {
  if (flag.load(std::memory_order_relaxed) != 0) return false;
  flag.store(1, std::memory_order_relaxed);
  return true;
}
inline bool takeFlag(std::atomic<uint32_t>& flag) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return flag.load(std::memory_order_relaxed) != 0 && flag.exchange(0) != 0;
}

class RingProducer {
 public:
  RingProducer() = default;
  RingProducer(RingControl* ctl, uint8_t* data, uint64_t capacity)
      : ctl_(ctl), data_(data), cap_(capacity), head_(ctl->head.load(std::memory_order_relaxed)) {
    tailCache_ = ctl->tail.load(std::memory_order_acquire);
  }
  // Free bytes; the consumer's tail is re-read only when the cached value shows less than want.
  uint64_t space(uint64_t want) {
    uint64_t free = cap_ - (head_ - tailCache_);
    if (free >= want) return free;
    tailCache_ = ctl_->tail.load(std::memory_order_acquire);
    return cap_ - (head_ - tailCache_);
  }
  // Copies n <= space() bytes into the ring; they become visible at the next publish().
  void write(const void* src, uint64_t n) {
    uint64_t pos = head_ & (cap_ - 1);
    uint64_t first = std::min(n, cap_ - pos);
    std::memcpy(data_ + pos, src, first);
    std::memcpy(data_, static_cast<const uint8_t*>(src) + first, n - first);
    head_ += n;
  }
  // Reserves n <= space() bytes without writing them (frame padding).
  void skip(uint64_t n) { head_ += n; }
  void publish() { ctl_->head.store(head_, std::memory_order_release); }
  // True, lowering the flag, when the consumer sleeps and must be woken (after publish()).
  bool takeConsumerWaiting() { return takeFlag(ctl_->consumerWaiting); }
  // Asks the consumer to ring when it frees space; true when the flag was newly raised.
  bool arm() { return armFlag(ctl_->producerWaiting); }

 private:
  RingControl* ctl_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t cap_ = 0;
  uint64_t head_ = 0;
  uint64_t tailCache_ = 0;
};

class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(RingControl* ctl, const uint8_t* data, uint64_t capacity)
      : ctl_(ctl), data_(data), cap_(capacity), tail_(ctl->tail.load(std::memory_order_relaxed)) {
    headCache_ = ctl->head.load(std::memory_order_acquire);
  }
  // Readable bytes; the producer's head is re-read only when the cached value shows less.
  uint64_t available(uint64_t want) {
    uint64_t have = headCache_ - tail_;
    if (have >= want) return have;
    headCache_ = ctl_->head.load(std::memory_order_acquire);
    return headCache_ - tail_;
  }
  // Copies n <= available() bytes out; their space is freed at the next release().
  void read(void* dst, uint64_t n) {
    uint64_t pos = tail_ & (cap_ - 1);
    uint64_t first = std::min(n, cap_ - pos);
    std::memcpy(dst, data_ + pos, first);
    std::memcpy(static_cast<uint8_t*>(dst) + first, data_, n - first);
    tail_ += n;
  }
  // Drops n <= available() bytes without reading them.
  void discard(uint64_t n) { tail_ += n; }
  void release() { ctl_->tail.store(tail_, std::memory_order_release); }
  bool takeProducerWaiting() { return takeFlag(ctl_->producerWaiting); }
  bool arm() { return armFlag(ctl_->consumerWaiting); }

 private:
  RingControl* ctl_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint64_t cap_ = 0;
  uint64_t tail_ = 0;
  uint64_t headCache_ = 0;
};

}  // namespace obccl::transport::shm
