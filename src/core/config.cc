#include "core/config.h"

#include <cstddef>
#include <cstdint>

#include "util/params.h"

namespace obccl::core {
namespace {

constexpr size_t kMaxConfigSize = 4096;  // larger sizes are garbage, not a newer struct

// A field is present when the caller's struct (of config->size bytes) covers it; fields a newer
// library appends are absent from an older caller's struct and take their defaults.
bool present(const obcclConfig_t* c, size_t offset, size_t size) {
  return c != nullptr && c->size >= offset + size;
}
#define OBCCL_CONFIG_HAS(c, field) \
  present(c, offsetof(obcclConfig_t, field), sizeof(((obcclConfig_t*)nullptr)->field))

// An int field: the struct's value unless undefined, else the parameter's.
Result<int64_t> intField(const obcclConfig_t* c, bool has, int value, const char* param) {
  if (has && value != OBCCL_CONFIG_UNDEF_INT) return static_cast<int64_t>(value);
  return paramInt(param);
}

// obcclInvalidArgument naming where the value came from: "config->timeoutMs = -5 ..." or
// "OBCCL_TIMEOUT_MS = -5 ...".
Status badValue(int64_t v, bool fromStruct, const char* field, const char* param,
                const char* expect) {
  std::string where = fromStruct ? std::string("config->") + field : std::string(param);
  return invalidArgument(where + " = " + std::to_string(v) + " is invalid: " + expect);
}

Status checkRange(int64_t v, int64_t lo, int64_t hi, bool fromStruct, const char* field,
                  const char* param, const char* expect) {
  if (v >= lo && v <= hi) return Status::ok();
  return badValue(v, fromStruct, field, param, expect);
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

}  // namespace

Status validateConfigStruct(const obcclConfig_t* c) {
  if (c == nullptr) return Status::ok();
  if (c->magic != OBCCL_CONFIG_MAGIC)
    return invalidArgument(
        "config->magic is wrong: initialize the struct with "
        "OBCCL_CONFIG_INITIALIZER");
  if (c->size < offsetof(obcclConfig_t, blocking) || c->size > kMaxConfigSize)
    return invalidArgument("config->size = " + std::to_string(c->size) +
                           " is invalid: initialize the struct with OBCCL_CONFIG_INITIALIZER");
  if (c->version < static_cast<unsigned>(OBCCL_VERSION(0, 1, 0)))
    return invalidArgument("config->version = " + std::to_string(c->version) +
                           " is not an OBCCL_VERSION_CODE: initialize the struct with "
                           "OBCCL_CONFIG_INITIALIZER");
  return Status::ok();
}

Result<std::vector<std::string>> parseTransportList(const std::string& list,
                                                    const std::string& what) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    std::string name = trim(list.substr(pos, comma - pos));
    pos = comma + 1;
    if (name.empty()) continue;
    if (name != "shm" && name != "ucx" && name != "tcp")
      return invalidArgument(what + ": unknown transport '" + name + "' (known: shm, ucx, tcp)");
    bool dup = false;
    for (const auto& n : out) dup = dup || n == name;
    if (!dup) out.push_back(name);
  }
  if (out.empty())
    return invalidArgument(what + ": '" + list + "' names no transport (known: shm, ucx, tcp)");
  return out;
}

Result<Config> resolveConfig(const obcclConfig_t* c) {
  OBCCL_TRY(validateConfigStruct(c));
  Config cfg;

  bool has = OBCCL_CONFIG_HAS(c, blocking) && c->blocking != OBCCL_CONFIG_UNDEF_INT;
  if (has) {
    OBCCL_TRY(checkRange(c->blocking, 0, 1, true, "blocking", "", "expected 0 or 1"));
    cfg.blocking = c->blocking != 0;
  } else {
    OBCCL_ASSIGN_OR_RETURN(cfg.blocking, paramBool("OBCCL_BLOCKING"));
  }

  has = OBCCL_CONFIG_HAS(c, timeoutMs);
  OBCCL_ASSIGN_OR_RETURN(int64_t timeout,
                         intField(c, has, has ? c->timeoutMs : 0, "OBCCL_TIMEOUT_MS"));
  OBCCL_TRY(checkRange(timeout, 1, INT32_MAX, has && c->timeoutMs != OBCCL_CONFIG_UNDEF_INT,
                       "timeoutMs", "OBCCL_TIMEOUT_MS", "expected a positive number of ms"));
  cfg.timeoutMs = static_cast<int>(timeout);

  if (OBCCL_CONFIG_HAS(c, transports) && c->transports != OBCCL_CONFIG_UNDEF_PTR) {
    OBCCL_ASSIGN_OR_RETURN(cfg.transports, parseTransportList(c->transports, "config->transports"));
  } else {
    OBCCL_ASSIGN_OR_RETURN(cfg.transports,
                           parseTransportList(paramString("OBCCL_TRANSPORTS"), "OBCCL_TRANSPORTS"));
  }

  has = OBCCL_CONFIG_HAS(c, compressBlock);
  OBCCL_ASSIGN_OR_RETURN(int64_t block,
                         intField(c, has, has ? c->compressBlock : 0, "OBCCL_COMPRESS_BLOCK"));
  bool blockFromStruct = has && c->compressBlock != OBCCL_CONFIG_UNDEF_INT;
  OBCCL_TRY(checkRange(block, 0, INT32_MAX, blockFromStruct, "compressBlock",
                       "OBCCL_COMPRESS_BLOCK", "expected 0 or a positive multiple of 8"));
  if (block % 8 != 0)
    return badValue(block, blockFromStruct, "compressBlock", "OBCCL_COMPRESS_BLOCK",
                    "expected 0 or a positive multiple of 8");
  cfg.compressBlock = static_cast<int>(block);

  has = OBCCL_CONFIG_HAS(c, hierarchical);
  OBCCL_ASSIGN_OR_RETURN(int64_t hier,
                         intField(c, has, has ? c->hierarchical : 0, "OBCCL_HIERARCHICAL"));
  OBCCL_TRY(checkRange(hier, -1, 1, has && c->hierarchical != OBCCL_CONFIG_UNDEF_INT,
                       "hierarchical", "OBCCL_HIERARCHICAL", "expected -1 (auto), 0 or 1"));
  cfg.hierarchical = static_cast<int>(hier);

  OBCCL_ASSIGN_OR_RETURN(int64_t small, paramInt("OBCCL_ALLREDUCE_SMALL_BYTES"));
  OBCCL_TRY(checkRange(small, 0, INT64_MAX, false, "", "OBCCL_ALLREDUCE_SMALL_BYTES",
                       "expected a byte count >= 0"));
  cfg.allreduceSmallBytes = static_cast<size_t>(small);
  OBCCL_ASSIGN_OR_RETURN(int64_t seg, paramInt("OBCCL_SEGMENT_BYTES"));
  OBCCL_TRY(checkRange(seg, 64, int64_t{1} << 40, false, "", "OBCCL_SEGMENT_BYTES",
                       "expected a byte count >= 64"));
  cfg.segmentBytes = static_cast<size_t>(seg);
  OBCCL_ASSIGN_OR_RETURN(cfg.checksum, paramBool("OBCCL_CHECKSUM"));
  OBCCL_ASSIGN_OR_RETURN(int64_t corrupt, paramInt("OBCCL_TEST_CORRUPT_RX"));
  OBCCL_TRY(checkRange(corrupt, 0, INT32_MAX, false, "", "OBCCL_TEST_CORRUPT_RX",
                       "expected 0 (off) or N > 0 (every N-th received payload)"));
  cfg.testCorruptRx = static_cast<int>(corrupt);
  cfg.codec = paramString("OBCCL_CODEC");
  cfg.socketIfname = paramString("OBCCL_SOCKET_IFNAME");
  cfg.topoFile = paramString("OBCCL_TOPO_FILE");
  return cfg;
}

}  // namespace obccl::core
