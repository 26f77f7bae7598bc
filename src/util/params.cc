#include "util/params.h"

#include <cerrno>
#include <cstdlib>

namespace obccl {
namespace {

const std::vector<ParamInfo>& registry() {
  static const std::vector<ParamInfo> kParams = {
      {"OBCCL_DEBUG", ParamType::kString, "WARN", "Log level: WARN, INFO, DEBUG or TRACE."},
      {"OBCCL_DEBUG_SUBSYS", ParamType::kString, "ALL",
       "Comma-separated subsystems to log (INIT,COLL,TRANSPORT,BOOTSTRAP,TOPO,CODEC,OPTIM,DEVICE); "
       "a leading ^ excludes."},
      {"OBCCL_DEBUG_FILE", ParamType::kString, "",
       "Write log lines to this file instead of stderr (%h: host, %p: pid)."},
      {"OBCCL_TIMEOUT_MS", ParamType::kInt, "600000",
       "Deadline in ms for bootstrap and every blocking wait inside a collective."},
      {"OBCCL_BLOCKING", ParamType::kBool, "1",
       "1: init blocks until the communicator is ready; 0: init may return obcclInProgress."},
      {"OBCCL_TRANSPORTS", ParamType::kString, "shm,ucx,tcp",
       "Ordered list of transports to try for each peer; the first that can connect wins."},
      {"OBCCL_COMPRESS_BLOCK", ParamType::kInt, "0",
       "Elements per scale block in the compressed allreduce (multiple of 8); 0: one scale per "
       "chunk, as in the 1-bit Adam paper."},
      {"OBCCL_HIERARCHICAL", ParamType::kInt, "-1",
       "Hierarchical compressed allreduce: -1 auto, 0 off, 1 on."},
      {"OBCCL_SOCKET_IFNAME", ParamType::kString, "",
       "Network interfaces to use: prefix list, =exact, ^exclude (NCCL's grammar). Empty: the "
       "first non-loopback interface that is up, else loopback."},
      {"OBCCL_BOOTSTRAP_HANDSHAKE_MS", ParamType::kInt, "2000",
       "A connection to a bootstrap root or tcp listener that stalls this long before it has "
       "authenticated is dropped (strangers cannot hold a listener)."},
      {"OBCCL_SOCKET_BUFFER_BYTES", ParamType::kInt, "4194304",
       "SO_SNDBUF/SO_RCVBUF for tcp transport sockets; skipped when net.core.rmem_max/wmem_max "
       "is smaller, 0 keeps the kernel's autotuning (better on long fat links)."},
      {"OBCCL_SOCKET_FAMILY", ParamType::kString, "",
       "Restrict interface addresses to AF_INET or AF_INET6."},
      {"OBCCL_ALLREDUCE_SMALL_BYTES", ParamType::kInt, "65536",
       "Allreduce messages up to this many bytes use recursive doubling; larger ones use a ring."},
      {"OBCCL_SEGMENT_BYTES", ParamType::kInt, "1048576",
       "Pipeline segment size in bytes for ring and compressed collectives."},
      {"OBCCL_CODEC", ParamType::kString, "auto",
       "Compression kernel variant: auto, scalar, avx2 or avx512."},
      {"OBCCL_CHECKSUM", ParamType::kBool, "0",
       "Also checksum uncompressed payloads (compressed payloads are always checksummed)."},
      {"OBCCL_TEST_CORRUPT_RX", ParamType::kInt, "0",
       "TEST ONLY, never in production: flip one bit of every N-th payload this rank receives, "
       "after the transport delivered it and before its checksum is checked (fault tests prove "
       "corruption becomes an error). 0: off."},
      {"OBCCL_TOPO_FILE", ParamType::kString, "",
       "Load the host map from this file instead of detecting it (tests fake hosts with it)."},
      {"OBCCL_TOPO_DUMP_FILE", ParamType::kString, "", "Write the detected topology to this file."},
      {"OBCCL_HOST_ID", ParamType::kString, "",
       "Replace this process's host id (hostname:boot id); ranks with equal ids share a host."},
      {"OBCCL_SHM_RING_BYTES", ParamType::kInt, "4194304",
       "Bytes of each shared-memory ring, one per direction per pair of ranks (power of two, at "
       "least 65536)."},
      {"OBCCL_RANK", ParamType::kString, "", "This process's rank for obcclCommInitFromEnv."},
      {"OBCCL_WORLD_SIZE", ParamType::kString, "", "Number of ranks for obcclCommInitFromEnv."},
      {"OBCCL_ROOT", ParamType::kString, "",
       "host:port of rank 0's bootstrap listener for obcclCommInitFromEnv."},
      {"OBCCL_SECRET", ParamType::kString, "",
       "Job secret, hex, at least 32 digits (128 bits); every connection proves knowledge of it."},
      {"OBCCL_ALLOW_UNAUTHENTICATED", ParamType::kBool, "0",
       "Allow obcclCommInitFromEnv without OBCCL_SECRET (a fixed, public key is used)."},
      {"OBCCL_ONEBIT_ROOT_FLOOR", ParamType::kString, "0.01",
       "1-bit Adam, compressed stage: floor sqrt(v) at this fraction of sqrt(mean v) over the "
       "unmasked coordinates, so coordinates with a tiny frozen variance do not take huge steps "
       "from +-scale momentum. 0: the paper's exact arithmetic (docs/ONEBIT_ADAM.md)."},
      {"OBCCL_ONEBIT_FREEZE_WINDOW", ParamType::kInt, "0",
       "1-bit Adam with OBCCL_FREEZE_AUTO: updates between checks of sum(v); 0: "
       "max(10, 0.1/(1-beta2))."},
      {"OBCCL_ONEBIT_FREEZE_TOL", ParamType::kString, "0.01",
       "1-bit Adam with OBCCL_FREEZE_AUTO: freeze when sum(v) changed by at most this fraction "
       "over the last window."},
      {"OBCCL_ONEBIT_FREEZE_MIN", ParamType::kInt, "0",
       "1-bit Adam with OBCCL_FREEZE_AUTO: fewest full-precision updates; 0: 1/(1-beta2)."},
      {"OBCCL_ONEBIT_FREEZE_MAX", ParamType::kInt, "0",
       "1-bit Adam with OBCCL_FREEZE_AUTO: freeze at this many updates whatever sum(v) does; 0: "
       "5/(1-beta2)."},
      {"OBCCL_DEVICE_PATH", ParamType::kString, "auto",
       "Compressed allreduce on device buffers: auto (NCCL when every rank has its own GPU and "
       "NCCL is built, else staged), nccl, staged (packed bytes through pinned memory and the "
       "host transports) or host-exchange (the NCCL path's device engine over the host "
       "transports, for testing). The strongest choice of any rank wins (docs/DEVICE_PATH.md)."},
  };
  return kParams;
}

}  // namespace

const std::vector<ParamInfo>& allParams() { return registry(); }

const ParamInfo* findParam(const std::string& name) {
  for (const auto& p : registry())
    if (name == p.name) return &p;
  return nullptr;
}

bool paramIsSet(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v != nullptr && *v != '\0';
}

std::string paramRaw(const std::string& name) {
  if (const char* v = std::getenv(name.c_str()); v != nullptr && *v != '\0') return v;
  const ParamInfo* p = findParam(name);
  return p ? p->defaultValue : "";
}

Result<int64_t> parseInt64(const std::string& text, const std::string& what) {
  if (text.empty()) return invalidArgument(what + ": empty value, expected an integer");
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str() || *end != '\0')
    return invalidArgument(what + ": '" + text + "' is not an integer");
  return static_cast<int64_t>(v);
}

Result<bool> parseBool(const std::string& text, const std::string& what) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (text == "0" || text == "false" || text == "no" || text == "off") return false;
  return invalidArgument(what + ": '" + text + "' is not a boolean (0 or 1)");
}

Result<int64_t> paramInt(const std::string& name) { return parseInt64(paramRaw(name), name); }
Result<bool> paramBool(const std::string& name) { return parseBool(paramRaw(name), name); }
std::string paramString(const std::string& name) { return paramRaw(name); }

}  // namespace obccl
