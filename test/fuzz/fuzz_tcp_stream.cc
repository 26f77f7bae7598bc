// A TCP data connection receiving an arbitrary byte stream (a hostile or broken peer): every
// posted receive completes with a value or an error, the connection never overflows the posted
// buffer (ASan) and never hangs.
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "transports/tcp/tcp_transport.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
  size_t written = 0;
  while (written < size) {
    ssize_t w = write(sv[1], data + written, size - written);
    if (w <= 0) break;
    written += static_cast<size_t>(w);
  }
  close(sv[1]);  // EOF after the bytes
  auto conn = obccl::transport::makeTcpConnection(obccl::UniqueFd(sv[0]), "fuzz peer");
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < 4; ++i) {
    obccl::transport::Request req;
    if (!conn->postRecv(buf.data(), buf.size(), &req).isOk()) break;
    for (int spins = 0; spins < 1000 && !req.done; ++spins) {
      if (!conn->progress().isOk()) break;
    }
    if (!req.done || !req.status.isOk()) break;
  }
  return 0;
}
