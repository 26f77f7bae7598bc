// The job secret and the root port.
//
// Rank 0 opens the bootstrap listener itself, inside obcclCommInitFromEnv, at the OBCCL_ROOT
// that every rank was started with; so the launcher must name a port before any rank runs, and
// cannot keep a listening socket on it. A port that is merely free when we look could be taken
// by another process before rank 0 binds it. We therefore "park" the port: listen on an
// ephemeral loopback port, connect to it, and close the accepted side first, which leaves that
// side in TIME_WAIT for about a minute. While it lingers, the kernel neither returns the port
// from bind(port 0) nor uses it as the source port of an outgoing connection, yet a listener
// with SO_REUSEADDR (as rank 0's bootstrap listener sets) may bind it at once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "tools/obcclrun/launcher.h"

namespace obccl::run {
namespace {

// Closes the descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

Result<std::string> makeSecretHex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    return systemError("OpenSSL RAND_bytes could not produce the job secret");
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : raw) {
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  return hex;
}

Result<int> reserveLoopbackPort() {
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.get() < 0) return errnoStatus("socket", errno);
  int one = 1;
  ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = loopback(0);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return errnoStatus("bind 127.0.0.1:0", errno);
  socklen_t len = sizeof(addr);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return errnoStatus("getsockname", errno);
  const int port = ntohs(addr.sin_port);
  if (::listen(listener.get(), 1) != 0)
    return errnoStatus("listen on 127.0.0.1:" + std::to_string(port), errno);

  // Park the port in TIME_WAIT (see the top of this file). If any step fails the port is still
  // free, just not parked, so we go on with it.
  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (client.get() >= 0 &&
      ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    Fd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    accepted.reset();  // the side that closes first keeps TIME_WAIT on `port`
  }
  return port;
}

}  // namespace obccl::run
