#include "transports/transport.h"

#include <cstddef>

#include "util/crc32c.h"

namespace obccl::transport {

void sealHeader(FrameHeader* header) {
  header->headerCrc = crc32c(header, offsetof(FrameHeader, headerCrc));
}

Status checkHeader(const FrameHeader& header, const std::string& peer) {
  if (header.magic != kFrameMagic) return remoteError("garbled frame from " + peer + ": bad magic");
  if (header.version != kFrameVersion)
    return remoteError("frame from " + peer + " has protocol version " +
                       std::to_string(header.version) + ", this rank speaks " +
                       std::to_string(kFrameVersion));
  if (header.headerCrc != crc32c(&header, offsetof(FrameHeader, headerCrc)))
    return remoteError("corrupted frame header from " + peer + " (checksum mismatch)");
  return Status::ok();
}

}  // namespace obccl::transport
