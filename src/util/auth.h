// Mutual challenge-response authentication with the job secret (HMAC-SHA256, OpenSSL libcrypto).
//
// Each side sends a hello carrying its role, its id and a fresh random nonce, then a proof:
//   HMAC(secret, label || purpose || commId || own role || own id || peer nonce || own nonce).
// The secret never crosses the wire; a proof is bound to the purpose ("bootstrap", "tcp-data"),
// the communicator and both nonces, so a recorded transcript fails against a fresh nonce, and a
// reflected hello fails the role check. Messages have fixed sizes, so a stranger can make a
// listener hold at most kAuthHelloBytes + kAuthProofBytes bytes. This authenticates the peers;
// it does not encrypt or protect the stream that follows against an active man in the middle.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/deadline.h"
#include "util/status.h"

namespace obccl {

constexpr size_t kAuthNonceBytes = 32;
constexpr size_t kAuthHelloBytes = 48;
constexpr size_t kAuthProofBytes = 32;

// The two ends must take different roles (the connecting side is the client).
enum class AuthRole : uint8_t { kClient = 'C', kServer = 'S' };

struct AuthOptions {
  std::string purpose;                    // "bootstrap" or "tcp-data"
  uint64_t commId = 0;                    // binds the proofs to one communicator
  std::vector<uint8_t> secret;            // the job secret (non-empty)
  AuthRole role = AuthRole::kClient;      // this side's role
  int64_t selfId = -1;                    // this side's id (a rank; -1 for a root service)
  std::optional<int64_t> expectedPeerId;  // when set, the peer must prove exactly this id
  std::string peerName;                   // "rank 3 at 198.18.0.2:40123", for messages
};

using AuthHello = std::array<uint8_t, kAuthHelloBytes>;
using AuthProof = std::array<uint8_t, kAuthProofBytes>;

// The handshake as a state machine without I/O, so an event loop (the root service) can drive
// many at once; authenticatePeer() below drives one over a blocking exchange.
class AuthHandshake {
 public:
  // Draws a fresh nonce (RAND_bytes). Fails on an empty secret or an unusable RNG.
  static Result<AuthHandshake> start(AuthOptions options);
  ~AuthHandshake();
  AuthHandshake(AuthHandshake&&) = default;
  AuthHandshake& operator=(AuthHandshake&&) = default;

  // This side's hello, to send first.
  const AuthHello& hello() const { return hello_; }
  // Takes the peer's hello (checks format, role and id) and returns this side's proof.
  Result<AuthProof> onPeerHello(const uint8_t* hello);
  // Verifies the peer's proof; ok means the peer knows the secret.
  Status onPeerProof(const uint8_t* proof);
  // The id the peer claimed in its hello; authenticated once onPeerProof() succeeded.
  int64_t peerId() const { return peerId_; }

 private:
  explicit AuthHandshake(AuthOptions options) : options_(std::move(options)) {}
  AuthProof proofFor(AuthRole role, int64_t id, const uint8_t* verifierNonce,
                     const uint8_t* proverNonce) const;

  AuthOptions options_;
  AuthHello hello_{};
  std::array<uint8_t, kAuthNonceBytes> nonce_{};
  std::array<uint8_t, kAuthNonceBytes> peerNonce_{};
  AuthRole peerRole_ = AuthRole::kServer;
  int64_t peerId_ = -1;
  bool haveHello_ = false;
};

// Runs the whole handshake over a connected socket, every read and write bounded by deadline.
// Returns the peer's authenticated id; failures name options.peerName and never the secret.
Result<int64_t> authenticatePeer(int fd, const AuthOptions& options, const Deadline& deadline);

// Fills buf with cryptographically strong random bytes (getrandom(2)).
Status randomBytes(void* buf, size_t len);

}  // namespace obccl
