// The one parameter registry: every OBCCL_* environment parameter is declared in params.cc with
// its type, default and help line. Precedence: config struct, then environment, then default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace obccl {

enum class ParamType { kInt, kString, kBool };

struct ParamInfo {
  const char* name;
  ParamType type;
  const char* defaultValue;
  const char* help;
};

// Every declared parameter, in declaration order.
const std::vector<ParamInfo>& allParams();
// The entry for `name`, or nullptr when it is not declared.
const ParamInfo* findParam(const std::string& name);
// The raw value: the environment's when set (and non-empty), else the default.
std::string paramRaw(const std::string& name);
// True when the environment sets `name`.
bool paramIsSet(const std::string& name);
// Typed reads; a malformed value is obcclInvalidArgument naming the parameter and the value.
Result<int64_t> paramInt(const std::string& name);
Result<bool> paramBool(const std::string& name);
std::string paramString(const std::string& name);

// Parsers shared with the tools and fuzz targets.
Result<int64_t> parseInt64(const std::string& text, const std::string& what);
Result<bool> parseBool(const std::string& text, const std::string& what);

}  // namespace obccl
