// The server side of the HMAC handshake fed a hostile peer's hello and proof: it must never
// crash, and never accept a peer that does not know the secret.
#include <vector>

#include "util/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < obccl::kAuthHelloBytes + obccl::kAuthProofBytes) return 0;
  obccl::AuthOptions opt;
  opt.purpose = "bootstrap";
  opt.commId = 42;
  opt.secret = std::vector<uint8_t>(32, 0x5a);
  opt.role = obccl::AuthRole::kServer;
  opt.selfId = -1;
  opt.peerName = "fuzz peer";
  auto hs = obccl::AuthHandshake::start(opt);
  if (!hs.isOk()) __builtin_trap();
  auto proof = hs.value().onPeerHello(data);
  if (!proof.isOk()) return 0;
  // The fuzzer cannot know the fresh nonce this side just made, so a proof must fail.
  if (hs.value().onPeerProof(data + obccl::kAuthHelloBytes).isOk()) __builtin_trap();
  return 0;
}
