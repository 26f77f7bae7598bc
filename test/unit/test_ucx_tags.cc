// The secret-keyed tags: SipHash-2-4 agrees with OpenSSL's, and keys separate direction, epoch,
// communicator and secret.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <set>

#include "transports/ucx/ucx_tags.h"

namespace obccl::transport::ucx {
namespace {

uint64_t opensslSipHash(const TagKey& key, uint64_t word) {
  uint8_t k[16], msg[8], out[8];
  for (int i = 0; i < 8; ++i) {
    k[i] = static_cast<uint8_t>(key.k0 >> (8 * i));
    k[8 + i] = static_cast<uint8_t>(key.k1 >> (8 * i));
    msg[i] = static_cast<uint8_t>(word >> (8 * i));
  }
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  if (mac == nullptr) return 0;
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  size_t outSize = 8, written = 0;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &outSize),
                         OSSL_PARAM_construct_end()};
  bool ok = EVP_MAC_init(ctx, k, sizeof(k), params) == 1 &&
            EVP_MAC_update(ctx, msg, sizeof(msg)) == 1 &&
            EVP_MAC_final(ctx, out, &written, sizeof(out)) == 1 && written == 8;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | out[i];
  return ok ? v : 0;
}

TEST(UcxTags, SipHashMatchesTheReferenceVector) {
  // Key 00..0f, message 00..07: the SipHash paper's vector for an 8-byte input.
  TagKey key{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  EXPECT_EQ(sipHash64(key, 0x0706050403020100ull), 0x93f5f5799a932462ull);
}

TEST(UcxTags, SipHashMatchesOpenSsl) {
  EVP_MAC* probe = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  if (probe == nullptr) GTEST_SKIP() << "this OpenSSL has no SIPHASH MAC";
  EVP_MAC_free(probe);
  TagKey key = deriveTagKey(std::vector<uint8_t>(32, 7), 1, 2, 3, 4);
  for (uint64_t w : {0ull, 1ull, 2ull, 0xffffffffffffffffull, 0x123456789abcdef0ull}) {
    EXPECT_EQ(sipHash64(key, w), opensslSipHash(key, w)) << w;
  }
}

TEST(UcxTags, KeysSeparateDirectionEpochCommAndSecret) {
  std::vector<uint8_t> secret(32, 1), other(32, 2);
  std::set<std::pair<uint64_t, uint64_t>> keys;
  auto add = [&](const TagKey& k) { keys.insert({k.k0, k.k1}); };
  add(deriveTagKey(secret, 10, 0, 0, 1));
  add(deriveTagKey(secret, 10, 0, 1, 0));  // the other direction
  add(deriveTagKey(secret, 10, 1, 0, 1));  // a later connect()
  add(deriveTagKey(secret, 11, 0, 0, 1));  // another communicator
  add(deriveTagKey(other, 10, 0, 0, 1));   // another job
  add(deriveTagKey({}, 10, 0, 0, 1));      // no secret at all
  EXPECT_EQ(keys.size(), 6u);
  // Deterministic: both ends derive the same key.
  TagKey a = deriveTagKey(secret, 10, 0, 0, 1), b = deriveTagKey(secret, 10, 0, 0, 1);
  EXPECT_EQ(a.k0, b.k0);
  EXPECT_EQ(a.k1, b.k1);
}

TEST(UcxTags, TagsOfOneStreamAreDistinct) {
  TagKey key = deriveTagKey(std::vector<uint8_t>(32, 5), 1, 0, 0, 1);
  std::set<uint64_t> tags;
  for (uint64_t seq = 0; seq < 5000; ++seq) {
    tags.insert(makeTag(key, TagKind::kHeader, seq));
    tags.insert(makeTag(key, TagKind::kPayload, seq));
  }
  tags.insert(makeTag(key, TagKind::kHello, 0));
  tags.insert(makeTag(key, TagKind::kGoodbye, 0));
  EXPECT_EQ(tags.size(), 10002u);
}

}  // namespace
}  // namespace obccl::transport::ucx
