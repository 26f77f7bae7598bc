#include "transports/ucx/ucx_tags.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

namespace obccl::transport::ucx {
namespace {

constexpr char kLabel[] = "obccl ucx tag key v1";

inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

struct SipState {
  uint64_t v0, v1, v2, v3;

  void round() {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  }

  void absorb(uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
};

void appendLe(std::vector<uint8_t>* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<uint8_t>(value >> (8 * i)));
}

uint64_t loadLe(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

uint64_t sipHash64(const TagKey& key, uint64_t word) {
  SipState s{key.k0 ^ 0x736f6d6570736575ull, key.k1 ^ 0x646f72616e646f6dull,
             key.k0 ^ 0x6c7967656e657261ull, key.k1 ^ 0x7465646279746573ull};
  s.absorb(word);
  s.absorb(uint64_t{8} << 56);  // the final block: message length 8, no tail bytes
  s.v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

TagKey deriveTagKey(const std::vector<uint8_t>& secret, uint64_t commId, uint32_t epoch,
                    int fromRank, int toRank) {
  std::vector<uint8_t> info(kLabel, kLabel + sizeof(kLabel));
  appendLe(&info, commId, 8);
  appendLe(&info, epoch, 4);
  appendLe(&info, static_cast<uint32_t>(fromRank), 4);
  appendLe(&info, static_cast<uint32_t>(toRank), 4);
  uint8_t mac[EVP_MAX_MD_SIZE] = {0};
  unsigned macLen = 0;
  // An empty secret (OBCCL_ALLOW_UNAUTHENTICATED) still yields distinct, if guessable, keys.
  static const uint8_t kEmpty = 0;
  HMAC(EVP_sha256(), secret.empty() ? &kEmpty : secret.data(), static_cast<int>(secret.size()),
       info.data(), info.size(), mac, &macLen);
  return TagKey{loadLe(mac), loadLe(mac + 8)};
}

}  // namespace obccl::transport::ucx
