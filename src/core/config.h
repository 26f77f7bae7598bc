// The communicator's configuration, read once at init and immutable afterwards.
// Precedence for every field: the obcclConfig_t value unless it holds the "undefined" marker,
// then the environment (the parameter registry, util/params.h), then the registry default.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::core {

struct Config {
  bool blocking = true;
  int timeoutMs = 600000;
  std::vector<std::string> transports;  // known names in the order to try ("shm", "ucx", "tcp")
  int compressBlock = 0;                // 0 or a positive multiple of 8
  int hierarchical = -1;                // -1 auto, 0 off, 1 on
  size_t allreduceSmallBytes = 65536;   // recursive doubling at or below, ring above
  size_t segmentBytes = 1 << 20;        // pipeline segment for ring collectives
  bool checksum = false;                // checksum uncompressed payloads too
  int testCorruptRx = 0;                // TEST ONLY: flip a bit in every N-th received payload
  std::string codec = "auto";
  std::string socketIfname;
  std::string topoFile;
};

// Checks size, magic and version of a caller's struct (nullptr is valid: all defaults).
Status validateConfigStruct(const obcclConfig_t* user);
// Resolves every field with the precedence above and validates the values; messages name the
// field ("config->timeoutMs") or the parameter ("OBCCL_TIMEOUT_MS").
Result<Config> resolveConfig(const obcclConfig_t* user);
// Parses "shm,tcp" into known transport names; an unknown name is obcclInvalidArgument.
Result<std::vector<std::string>> parseTransportList(const std::string& list,
                                                    const std::string& what);

}  // namespace obccl::core
