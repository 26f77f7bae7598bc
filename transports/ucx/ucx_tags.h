// Secret-keyed UCX tags. UCX tag receives are posted on the worker and match a message from any
// endpoint, including one a stranger opened to our tcp port, so a tag must not be guessable:
// every message's tag is a pseudorandom function of (direction key, frame sequence, kind), and
// the direction key is derived from the job secret. Only a holder of the secret can produce a
// tag that one of our receives will match; anything else stays unmatched in UCX's queue.
#pragma once

#include <cstdint>
#include <vector>

namespace obccl::transport::ucx {

// What a tagged message is. Header and payload of one frame share the frame's sequence number.
enum class TagKind : uint64_t { kHeader = 0, kPayload = 1, kHello = 2, kGoodbye = 3 };

// The 128-bit key of one direction (sender -> receiver) of one connection.
struct TagKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

// HMAC-SHA256(secret, label | commId | epoch | from | to), truncated to 128 bits. `epoch` counts
// the transport's connect() calls, so two connections between the same ranks never share tags.
TagKey deriveTagKey(const std::vector<uint8_t>& secret, uint64_t commId, uint32_t epoch,
                    int fromRank, int toRank);

// SipHash-2-4 of one 64-bit word (little-endian bytes), the PRF behind every tag.
uint64_t sipHash64(const TagKey& key, uint64_t word);

// The tag of message `kind` of frame `seq` in the direction `key` describes.
inline uint64_t makeTag(const TagKey& key, TagKind kind, uint64_t seq) {
  return sipHash64(key, (seq << 2) | static_cast<uint64_t>(kind));
}

}  // namespace obccl::transport::ucx
