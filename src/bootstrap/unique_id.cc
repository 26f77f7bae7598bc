// The unique id's 128-byte wire form, and starting root services.
#include <cstring>

#include "bootstrap/bootstrap.h"
#include "bootstrap/root_service.h"
#include "util/auth.h"
#include "util/crc32c.h"
#include "util/log.h"
#include "util/params.h"

namespace obccl::bootstrap {
namespace {

// Layout: magic[4], version (u16), reserved (u16), root address (SocketAddress wire form),
// secret[32], commId (u64), zero padding, and a CRC32C of bytes [0, 124) in the last 4 bytes.
constexpr uint8_t kIdMagic[4] = {'O', 'B', 'I', 'D'};
constexpr uint16_t kIdVersion = 1;
constexpr size_t kAddrOffset = 8;
constexpr size_t kSecretOffset = kAddrOffset + SocketAddress::kWireBytes;
constexpr size_t kCommIdOffset = kSecretOffset + kSecretBytes;
constexpr size_t kCrcOffset = OBCCL_UNIQUE_ID_BYTES - 4;
static_assert(kCommIdOffset + 8 <= kCrcOffset, "unique id layout overflows");

Result<RootServiceOptions> resolve(RootServiceOptions o) {
  if (o.joinTimeoutMs < 0) {
    OBCCL_ASSIGN_OR_RETURN(o.joinTimeoutMs, paramInt("OBCCL_TIMEOUT_MS"));
  }
  if (o.handshakeTimeoutMs < 0) {
    OBCCL_ASSIGN_OR_RETURN(o.handshakeTimeoutMs, paramInt("OBCCL_BOOTSTRAP_HANDSHAKE_MS"));
  }
  if (o.joinTimeoutMs <= 0 || o.handshakeTimeoutMs <= 0)
    return invalidArgument("bootstrap root: timeouts must be positive (join " +
                           std::to_string(o.joinTimeoutMs) + " ms, handshake " +
                           std::to_string(o.handshakeTimeoutMs) + " ms)");
  if (o.maxPendingHandshakes < 1) o.maxPendingHandshakes = 1;
  if (o.ifname.empty()) o.ifname = paramString("OBCCL_SOCKET_IFNAME");
  return o;
}

}  // namespace

obcclUniqueId encodeUniqueId(const UniqueIdData& data) {
  obcclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  auto* p = reinterpret_cast<uint8_t*>(id.internal);
  std::memcpy(p, kIdMagic, 4);
  std::memcpy(p + 4, &kIdVersion, 2);
  data.root.toWire(p + kAddrOffset);
  std::memcpy(p + kSecretOffset, data.secret.data(), std::min(data.secret.size(), kSecretBytes));
  std::memcpy(p + kCommIdOffset, &data.commId, 8);
  uint32_t crc = crc32c(p, kCrcOffset);
  std::memcpy(p + kCrcOffset, &crc, 4);
  return id;
}

Result<UniqueIdData> decodeUniqueId(const obcclUniqueId& id) {
  const auto* p = reinterpret_cast<const uint8_t*>(id.internal);
  if (std::memcmp(p, kIdMagic, 4) != 0)
    return invalidArgument(
        "unique id is not an obccl id (bad magic); was it made by "
        "obcclGetUniqueId and copied to every rank unchanged?");
  uint16_t version = 0;
  std::memcpy(&version, p + 4, 2);
  if (version != kIdVersion)
    return invalidArgument("unique id has version " + std::to_string(version) +
                           ", this library reads version " + std::to_string(kIdVersion));
  uint32_t crc = 0;
  std::memcpy(&crc, p + kCrcOffset, 4);
  if (crc != crc32c(p, kCrcOffset))
    return invalidArgument(
        "unique id is garbled (checksum mismatch); it must reach every rank "
        "byte for byte");
  UniqueIdData data;
  OBCCL_ASSIGN_OR_RETURN(data.root, SocketAddress::fromWire(p + kAddrOffset));
  data.secret.assign(p + kSecretOffset, p + kSecretOffset + kSecretBytes);
  std::memcpy(&data.commId, p + kCommIdOffset, 8);
  return data;
}

Result<UniqueIdData> createUniqueId() { return createUniqueId(RootServiceOptions()); }

Result<UniqueIdData> createUniqueId(const RootServiceOptions& options) {
  OBCCL_ASSIGN_OR_RETURN(RootServiceOptions opts, resolve(options));
  UniqueIdData data;
  data.secret.resize(kSecretBytes);
  OBCCL_TRY(randomBytes(data.secret.data(), data.secret.size()));
  OBCCL_TRY(randomBytes(&data.commId, sizeof(data.commId)));
  OBCCL_ASSIGN_OR_RETURN(SocketAddress where, chooseInterfaceAddress(opts.ifname));
  where.setPort(0);  // The kernel picks a free port; listenOn reads it back.
  SocketAddress bound;
  OBCCL_ASSIGN_OR_RETURN(UniqueFd listener, listenOn(where, &bound));
  data.root = bound;
  OBCCL_TRY(launchRootService(std::move(listener), bound, data, opts));
  return data;
}

Status startRootService(const UniqueIdData& data) {
  return startRootService(data, RootServiceOptions());
}

Status startRootService(const UniqueIdData& data, const RootServiceOptions& options) {
  OBCCL_ASSIGN_OR_RETURN(RootServiceOptions opts, resolve(options));
  if (data.secret.empty()) return invalidArgument("bootstrap root: empty job secret");
  if (data.root.empty() || data.root.port() == 0)
    return invalidArgument("bootstrap root: a fixed address with a port is required, got " +
                           data.root.toString());
  SocketAddress bound;
  Result<UniqueFd> listener = listenOn(data.root, &bound);
  if (!listener.isOk()) {
    // MASTER_ADDR may name an address this host does not own directly (NAT, a load balancer
    // or a hostname resolving to the outside address): listen on every address instead.
    SocketAddress any = SocketAddress::any(data.root.family(), data.root.port());
    listener = listenOn(any, &bound);
    if (!listener.isOk())
      return listener.status().withContext("bootstrap root cannot listen on " +
                                           data.root.toString());
    OBCCL_INFO(kSubsysBootstrap, "bootstrap root: cannot bind %s, listening on %s instead",
               data.root.toString().c_str(), bound.toString().c_str());
  }
  return launchRootService(std::move(listener).value(), bound, data, opts);
}

}  // namespace obccl::bootstrap
