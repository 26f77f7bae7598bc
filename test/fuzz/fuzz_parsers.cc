// Parameter and topology-file parsers on arbitrary text: errors are values, never crashes.
#include <string>

#include "topo/topology.h"
#include "util/log.h"
#include "util/params.h"
#include "util/socket.h"

// SocketAddress::parse is left out on purpose: it resolves host names, and a fuzzer must not
// send DNS queries off this machine.

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)obccl::parseInt64(text, "fuzz").isOk();
  (void)obccl::parseBool(text, "fuzz").isOk();
  (void)obccl::parseLogSubsys(text);
  (void)obccl::parseLogLevel(text);
  (void)obccl::parseSocketFamily(text).isOk();
  size_t cut = text.find('\n');
  if (cut != std::string::npos)
    (void)obccl::interfaceNameMatches(text.substr(0, cut), text.substr(cut + 1));
  auto hosts = obccl::topo::parseTopoText(text, 1 + static_cast<int>(size % 9), "fuzz");
  if (hosts.isOk()) (void)obccl::topo::makeHostMap(hosts.value());
  return 0;
}
