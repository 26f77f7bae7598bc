// Wire format between a rank and the root service, after the HMAC handshake (purpose
// "bootstrap"). Every message is a fixed header plus `length` payload bytes; both ends bound
// `length` before allocating.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "util/status.h"

namespace obccl::bootstrap {

constexpr uint32_t kMsgMagic = 0x0bcc7b57u;
constexpr const char* kAuthPurpose = "bootstrap";
// The root's id in the handshake (ranks use their rank).
constexpr int64_t kRootAuthId = -1;
// Largest allgather contribution of one rank (the root holds nranks of them per round).
constexpr uint64_t kMaxContributionBytes = 64ull << 20;

enum class MsgType : uint32_t {
  kJoin = 1,        // rank -> root: JoinPayload
  kWelcome = 2,     // root -> rank: every rank has joined
  kError = 3,       // root -> rank: int32 obcclResult_t, then the message text
  kContribute = 4,  // rank -> root: seq = round, payload = this rank's bytes
  kResult = 5,      // root -> rank: seq = round, payload = nranks uint64 lengths, then the bytes
  kJobFailed = 6,   // either way, after init: int32 obcclResult_t, then the message text; the
                    // root forwards the first one to every other rank
};

struct MsgHeader {
  uint32_t magic = kMsgMagic;
  uint32_t type = 0;
  uint64_t seq = 0;
  uint64_t length = 0;
};
static_assert(sizeof(MsgHeader) == 24, "MsgHeader is a fixed wire format");

struct JoinPayload {
  int32_t rank = -1;
  int32_t nranks = 0;
};
static_assert(sizeof(JoinPayload) == 8, "JoinPayload is a fixed wire format");

inline MsgHeader makeHeader(MsgType type, uint64_t seq, uint64_t length) {
  MsgHeader h;
  h.type = static_cast<uint32_t>(type);
  h.seq = seq;
  h.length = length;
  return h;
}

// Header followed by payload, as one buffer.
inline std::vector<uint8_t> makeMessage(MsgType type, uint64_t seq, const void* payload,
                                        size_t length) {
  std::vector<uint8_t> out(sizeof(MsgHeader) + length);
  MsgHeader h = makeHeader(type, seq, length);
  std::memcpy(out.data(), &h, sizeof(h));
  if (length > 0) std::memcpy(out.data() + sizeof(h), payload, length);
  return out;
}

inline std::vector<uint8_t> makeErrorMessage(const Status& status) {
  std::vector<uint8_t> payload(4 + status.message().size());
  int32_t code = status.code();
  std::memcpy(payload.data(), &code, 4);
  std::memcpy(payload.data() + 4, status.message().data(), status.message().size());
  return makeMessage(MsgType::kError, 0, payload.data(), payload.size());
}

// Largest error text the root sends; longer texts are cut.
constexpr size_t kMaxErrorBytes = 4096;

inline Status parseErrorPayload(const std::vector<uint8_t>& payload) {
  if (payload.size() < 4) return remoteError("bootstrap root sent a malformed error message");
  int32_t code = 0;
  std::memcpy(&code, payload.data(), 4);
  if (code <= obcclSuccess || code >= obcclNumResults) code = obcclRemoteError;
  return Status(static_cast<obcclResult_t>(code), std::string(payload.begin() + 4, payload.end()));
}

}  // namespace obccl::bootstrap
