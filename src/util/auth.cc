#include "util/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "util/socket.h"

namespace obccl {
namespace {

constexpr uint8_t kHelloMagic[4] = {'O', 'B', 'A', 'U'};
constexpr uint8_t kHelloVersion = 1;
constexpr char kLabel[] = "obccl-auth-v1";

// Hello layout: magic[4], version, role, reserved[2], id (int64, little endian), nonce[32].
constexpr size_t kIdOffset = 8;
constexpr size_t kNonceOffset = 16;
static_assert(kNonceOffset + kAuthNonceBytes == kAuthHelloBytes, "hello layout");

void putU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t getU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string roleName(AuthRole r) { return r == AuthRole::kClient ? "client" : "server"; }

}  // namespace

// The kernel's generator (getrandom(2)), not OpenSSL's RAND_bytes: OpenSSL keeps a generator
// per thread, and a thread still running when the process exits (the bootstrap root's) takes it
// along unfreed, which LeakSanitizer reports as a leak.
Status randomBytes(void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errnoStatus("getrandom for a nonce or secret", errno);
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::ok();
}

Result<AuthHandshake> AuthHandshake::start(AuthOptions options) {
  if (options.secret.empty()) return invalidArgument("authentication: empty job secret");
  AuthHandshake h(std::move(options));
  OBCCL_TRY(randomBytes(h.nonce_.data(), h.nonce_.size()));
  std::memcpy(h.hello_.data(), kHelloMagic, 4);
  h.hello_[4] = kHelloVersion;
  h.hello_[5] = static_cast<uint8_t>(h.options_.role);
  putU64(h.hello_.data() + kIdOffset, static_cast<uint64_t>(h.options_.selfId));
  std::memcpy(h.hello_.data() + kNonceOffset, h.nonce_.data(), kAuthNonceBytes);
  return h;
}

AuthHandshake::~AuthHandshake() {
  if (!options_.secret.empty()) OPENSSL_cleanse(options_.secret.data(), options_.secret.size());
}

AuthProof AuthHandshake::proofFor(AuthRole role, int64_t id, const uint8_t* verifierNonce,
                                  const uint8_t* proverNonce) const {
  std::vector<uint8_t> msg;
  msg.reserve(sizeof(kLabel) + options_.purpose.size() + 1 + 8 + 1 + 8 + 2 * kAuthNonceBytes);
  msg.insert(msg.end(), kLabel, kLabel + sizeof(kLabel));  // includes the NUL separator
  msg.insert(msg.end(), options_.purpose.begin(), options_.purpose.end());
  msg.push_back(0);
  uint8_t num[8];
  putU64(num, options_.commId);
  msg.insert(msg.end(), num, num + 8);
  msg.push_back(static_cast<uint8_t>(role));
  putU64(num, static_cast<uint64_t>(id));
  msg.insert(msg.end(), num, num + 8);
  msg.insert(msg.end(), verifierNonce, verifierNonce + kAuthNonceBytes);
  msg.insert(msg.end(), proverNonce, proverNonce + kAuthNonceBytes);
  AuthProof out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), options_.secret.data(), static_cast<int>(options_.secret.size()), msg.data(),
       msg.size(), out.data(), &len);
  return out;
}

Result<AuthProof> AuthHandshake::onPeerHello(const uint8_t* hello) {
  const std::string& peer = options_.peerName;
  if (std::memcmp(hello, kHelloMagic, 4) != 0)
    return remoteError("authentication with " + peer + " failed: not an obccl peer (bad magic)");
  if (hello[4] != kHelloVersion)
    return remoteError("authentication with " + peer + " failed: protocol version " +
                       std::to_string(hello[4]) + ", expected " + std::to_string(kHelloVersion));
  auto role = static_cast<AuthRole>(hello[5]);
  if ((role != AuthRole::kClient && role != AuthRole::kServer) || role == options_.role)
    return remoteError("authentication with " + peer + " failed: peer claims the " +
                       (role == options_.role ? roleName(role) : std::string("unknown")) + " role");
  std::memcpy(peerNonce_.data(), hello + kNonceOffset, kAuthNonceBytes);
  // Our own nonce coming back means a reflected hello.
  if (CRYPTO_memcmp(peerNonce_.data(), nonce_.data(), kAuthNonceBytes) == 0)
    return remoteError("authentication with " + peer + " failed: reflected nonce");
  peerRole_ = role;
  peerId_ = static_cast<int64_t>(getU64(hello + kIdOffset));
  if (options_.expectedPeerId && *options_.expectedPeerId != peerId_)
    return remoteError("authentication with " + peer + " failed: peer claims id " +
                       std::to_string(peerId_) + ", expected " +
                       std::to_string(*options_.expectedPeerId));
  haveHello_ = true;
  return proofFor(options_.role, options_.selfId, peerNonce_.data(), nonce_.data());
}

Status AuthHandshake::onPeerProof(const uint8_t* proof) {
  if (!haveHello_) return internalError("authentication: proof before hello");
  AuthProof expected = proofFor(peerRole_, peerId_, nonce_.data(), peerNonce_.data());
  if (CRYPTO_memcmp(expected.data(), proof, kAuthProofBytes) != 0)
    return remoteError("authentication with " + options_.peerName +
                       " failed: the peer does not know this job's secret (or belongs to another "
                       "job or communicator)");
  return Status::ok();
}

Result<int64_t> authenticatePeer(int fd, const AuthOptions& options, const Deadline& deadline) {
  OBCCL_ASSIGN_OR_RETURN(AuthHandshake h, AuthHandshake::start(options));
  const std::string& peer = options.peerName;
  // Both sides write before reading; the messages are small enough for any socket buffer.
  OBCCL_TRY(writeFull(fd, h.hello().data(), kAuthHelloBytes, deadline, peer));
  AuthHello peerHello;
  OBCCL_TRY(readFull(fd, peerHello.data(), kAuthHelloBytes, deadline, peer)
                .withContext("authentication with " + peer));
  OBCCL_ASSIGN_OR_RETURN(AuthProof proof, h.onPeerHello(peerHello.data()));
  OBCCL_TRY(writeFull(fd, proof.data(), kAuthProofBytes, deadline, peer));
  AuthProof peerProof;
  OBCCL_TRY(readFull(fd, peerProof.data(), kAuthProofBytes, deadline, peer)
                .withContext("authentication with " + peer));
  OBCCL_TRY(h.onPeerProof(peerProof.data()));
  return h.peerId();
}

}  // namespace obccl
