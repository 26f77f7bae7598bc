// The 128 opaque bytes of an obcclUniqueId come from users and the network: any bytes must
// either decode to a valid id that re-encodes to an id that decodes identically, or be refused.
#include <cstring>

#include "bootstrap/bootstrap.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  obcclUniqueId id{};
  std::memcpy(id.internal, data, size < sizeof(id.internal) ? size : sizeof(id.internal));
  auto decoded = obccl::bootstrap::decodeUniqueId(id);
  if (!decoded.isOk()) return 0;
  obcclUniqueId again = obccl::bootstrap::encodeUniqueId(decoded.value());
  auto twice = obccl::bootstrap::decodeUniqueId(again);
  if (!twice.isOk() || twice.value().commId != decoded.value().commId ||
      twice.value().secret != decoded.value().secret ||
      !(twice.value().root == decoded.value().root))
    __builtin_trap();
  return 0;
}
