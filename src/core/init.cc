#include "core/init.h"

#include <openssl/sha.h>

#include <cstdlib>
#include <cstring>

#include "util/log.h"
#include "util/params.h"

#if OBCCL_CORE_HAVE_BOOTSTRAP
#include "bootstrap/bootstrap.h"
#endif

namespace obccl::core {
namespace {

// The first variable of the list that is set (non-empty); *name receives its name.
const char* firstEnv(std::initializer_list<const char*> names, std::string* name) {
  for (const char* n : names) {
    const char* v = std::getenv(n);
    if (v != nullptr && *v != '\0') {
      *name = n;
      return v;
    }
  }
  return nullptr;
}

Result<int> envInt(std::initializer_list<const char*> names, const char* what) {
  std::string name;
  const char* v = firstEnv(names, &name);
  if (v == nullptr) {
    std::string list;
    for (const char* n : names) list += (list.empty() ? "" : ", ") + std::string(n);
    return invalidArgument(std::string("obcclCommInitFromEnv: no ") + what +
                           " in the environment (set one of " + list + ")");
  }
  OBCCL_ASSIGN_OR_RETURN(int64_t x, parseInt64(v, name));
  if (x < 0 || x > (1 << 24))
    return invalidArgument(name + " = " + v + " is out of range for the " + what);
  return static_cast<int>(x);
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::vector<uint8_t>> envSecret() {
  const char* hex = std::getenv("OBCCL_SECRET");
  if (hex == nullptr || *hex == '\0') {
    OBCCL_ASSIGN_OR_RETURN(bool allow, paramBool("OBCCL_ALLOW_UNAUTHENTICATED"));
    if (!allow)
      return invalidArgument(
          "obcclCommInitFromEnv: no job secret. Set OBCCL_SECRET=<hex> to the same random "
          "string of at least 32 hex digits on every rank (e.g. from `openssl rand -hex 32`), "
          "or OBCCL_ALLOW_UNAUTHENTICATED=1 to run without authentication on a trusted network");
    OBCCL_WARN(kSubsysInit, "OBCCL_ALLOW_UNAUTHENTICATED=1: connections use a public key");
    static const char kPublicKey[] = "obccl-unauthenticated-public-key";
    return std::vector<uint8_t>(kPublicKey, kPublicKey + sizeof(kPublicKey) - 1);
  }
  size_t len = std::strlen(hex);
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < len; i += 2) {
    int hi = hexDigit(hex[i]), lo = hexDigit(hex[i + 1]);
    if (hi < 0 || lo < 0) break;
    out.push_back(static_cast<uint8_t>(hi * 16 + lo));
  }
  if (len < 32 || len % 2 != 0 || out.size() * 2 != len)
    return invalidArgument(
        "OBCCL_SECRET must be an even number of hex digits, at least 32 "
        "(128 bits); got " +
        std::to_string(len) + " characters");
  return out;
}

// "host:port" from OBCCL_ROOT, else MASTER_ADDR + MASTER_PORT (IPv6 literals get brackets).
Result<std::string> envRoot() {
  if (const char* root = std::getenv("OBCCL_ROOT"); root != nullptr && *root != '\0')
    return std::string(root);
  const char* addr = std::getenv("MASTER_ADDR");
  const char* port = std::getenv("MASTER_PORT");
  if (addr == nullptr || *addr == '\0' || port == nullptr || *port == '\0')
    return invalidArgument(
        "obcclCommInitFromEnv: no root address (set OBCCL_ROOT=host:port, or "
        "MASTER_ADDR and MASTER_PORT)");
  std::string host = addr;
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return host + ":" + port;
}

}  // namespace

#if OBCCL_CORE_HAVE_BOOTSTRAP

Result<obcclUniqueId> newUniqueId() {
  OBCCL_ASSIGN_OR_RETURN(bootstrap::UniqueIdData data, bootstrap::createUniqueId());
  return bootstrap::encodeUniqueId(data);
}

Result<JoinInfo> joinInfoFromUniqueId(const obcclUniqueId& id, int rank, int nranks) {
  Result<bootstrap::UniqueIdData> data = bootstrap::decodeUniqueId(id);
  if (!data.isOk()) return data.status().withContext("commId");
  JoinInfo info;
  info.id = std::make_shared<bootstrap::UniqueIdData>(std::move(data).value());
  info.rank = rank;
  info.nranks = nranks;
  return info;
}

Result<JoinInfo> joinInfoFromEnv() {
  JoinInfo info;
  OBCCL_ASSIGN_OR_RETURN(
      info.rank,
      envInt({"OBCCL_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}, "rank"));
  OBCCL_ASSIGN_OR_RETURN(info.nranks, envInt({"OBCCL_WORLD_SIZE", "WORLD_SIZE",
                                              "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"},
                                             "world size"));
  if (info.nranks < 1 || info.rank >= info.nranks)
    return invalidArgument("obcclCommInitFromEnv: rank " + std::to_string(info.rank) +
                           " is outside [0, world size " + std::to_string(info.nranks) + ")");
  OBCCL_ASSIGN_OR_RETURN(std::string rootText, envRoot());
  auto data = std::make_shared<bootstrap::UniqueIdData>();
  Result<SocketAddress> root = SocketAddress::parse(rootText);
  if (!root.isOk())
    return root.status().withContext("obcclCommInitFromEnv: root address '" + rootText + "'");
  data->root = root.value();
  OBCCL_ASSIGN_OR_RETURN(data->secret, envSecret());
  // Every rank derives the same communicator id from the secret and the root address.
  std::string seed(data->secret.begin(), data->secret.end());
  seed += "|" + data->root.toString();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(seed.data()), seed.size(), digest);
  std::memcpy(&data->commId, digest, sizeof(data->commId));
  info.id = data;
  info.startRoot = info.rank == 0;
  return info;
}

Status joinComm(Comm& comm, const JoinInfo& info) {
  if (info.startRoot) OBCCL_TRY(bootstrap::startRootService(*info.id));
  return comm.init(*info.id);
}

#else  // no bootstrap layer in this build yet

Result<obcclUniqueId> newUniqueId() { return internalError("this build has no bootstrap layer"); }
Result<JoinInfo> joinInfoFromUniqueId(const obcclUniqueId&, int, int) {
  return internalError("this build has no bootstrap layer");
}
Result<JoinInfo> joinInfoFromEnv() { return internalError("this build has no bootstrap layer"); }
Status joinComm(Comm&, const JoinInfo&) {
  return internalError("this build has no bootstrap layer");
}

#endif

}  // namespace obccl::core
