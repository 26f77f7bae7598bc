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
  // Copies n <= space() bytes into the ring and publishes them.
  void push(const void* src, uint64_t n) {
    uint64_t pos = head_ & (cap_ - 1);
    uint64_t first = std::min(n, cap_ - pos);
    std::memcpy(data_ + pos, src, first);
    std::memcpy(data_, static_cast<const uint8_t*>(src) + first, n - first);
    skip(n);
  }
  // Publishes n <= space() bytes without writing them (frame padding).
  void skip(uint64_t n) {
    head_ += n;
    ctl_->head.store(head_, std::memory_order_release);
  }
  // True, clearing the flag, when the consumer went to sleep and must be woken. The fence pairs
  // with the one in RingConsumer::setWaiting: either we see its flag or it sees our head.
  bool takeConsumerWaiting() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ctl_->consumerWaiting.load(std::memory_order_relaxed) == 0) return false;
    return ctl_->consumerWaiting.exchange(0) != 0;
  }
  // Asks the consumer to ring our doorbell when it frees space.
  void setWaiting() {
    ctl_->producerWaiting.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

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
  // Copies n <= available() bytes out of the ring and frees their space.
  void pop(void* dst, uint64_t n) {
    uint64_t pos = tail_ & (cap_ - 1);
    uint64_t first = std::min(n, cap_ - pos);
    std::memcpy(dst, data_ + pos, first);
    std::memcpy(static_cast<uint8_t*>(dst) + first, data_, n - first);
    discard(n);
  }
  // Frees n <= available() bytes without reading them.
  void discard(uint64_t n) {
    tail_ += n;
    ctl_->tail.store(tail_, std::memory_order_release);
  }
  bool takeProducerWaiting() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ctl_->producerWaiting.load(std::memory_order_relaxed) == 0) return false;
    return ctl_->producerWaiting.exchange(0) != 0;
  }
  void setWaiting() {
    ctl_->consumerWaiting.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

 private:
  RingControl* ctl_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint64_t cap_ = 0;
  uint64_t tail_ = 0;
  uint64_t headCache_ = 0;
};

}  // namespace obccl::transport::shm
