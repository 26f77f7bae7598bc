// A received frame header is checked before any field is trusted: arbitrary bytes must be
// refused unless they carry the magic, the version and a matching header checksum.
#include <cstring>

#include "transports/transport.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using obccl::transport::FrameHeader;
  FrameHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(&h, data, size < sizeof(h) ? size : sizeof(h));
  obccl::Status st = obccl::transport::checkHeader(h, "fuzz peer");
  if (st.isOk()) {
    // Only a sealed header passes: resealing must not change it.
    FrameHeader copy = h;
    obccl::transport::sealHeader(&copy);
    if (copy.headerCrc != h.headerCrc) __builtin_trap();
  }
  return 0;
}
