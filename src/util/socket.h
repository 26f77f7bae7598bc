// Sockets: addresses (IPv4 and IPv6), an owning fd, deadline-bounded connect/read/write, and
// interface selection with NCCL's OBCCL_SOCKET_IFNAME grammar.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "util/deadline.h"
#include "util/status.h"

namespace obccl {

// Owns a file descriptor: closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the current fd (if any) and takes ownership of fd.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// An IPv4 or IPv6 socket address (sockaddr_storage inside). Default-constructed: empty.
class SocketAddress {
 public:
  // Bytes of the fixed-size wire form (family, port, address, scope id).
  static constexpr size_t kWireBytes = 24;

  SocketAddress() = default;
  // Copies an AF_INET or AF_INET6 sockaddr; anything else gives an empty address.
  static SocketAddress fromSockaddr(const struct sockaddr* sa, socklen_t len);
  // Parses "1.2.3.4:80", "[::1]:80", "host:80" (resolved with getaddrinfo, first result). The
  // port is required; a bare IPv6 address without brackets is rejected as ambiguous.
  static Result<SocketAddress> parse(const std::string& text);
  // Parses a numeric host without port ("1.2.3.4", "::1", "[::1]") with the given port.
  static Result<SocketAddress> fromHostPort(const std::string& host, uint16_t port);
  // The wildcard address (0.0.0.0 or ::) of a family.
  static SocketAddress any(int family, uint16_t port);
  // Decodes the wire form written by toWire(); obcclInvalidArgument when it is malformed.
  static Result<SocketAddress> fromWire(const uint8_t* wire);

  bool empty() const { return len_ == 0; }
  int family() const;
  uint16_t port() const;
  void setPort(uint16_t port);
  bool isLoopback() const;
  bool isLinkLocal() const;
  // "1.2.3.4" or "fe80::1%eth0" (numeric).
  std::string host() const;
  // "1.2.3.4:80" or "[::1]:80"; "(none)" when empty.
  std::string toString() const;
  void toWire(uint8_t* wire) const;

  const struct sockaddr* sockaddr() const {
    return reinterpret_cast<const struct sockaddr*>(&storage_);
  }
  socklen_t length() const { return len_; }

  bool operator==(const SocketAddress& other) const;
  bool operator!=(const SocketAddress& other) const { return !(*this == other); }

 private:
  struct sockaddr_storage storage_ = {};
  socklen_t len_ = 0;
};

// One address of a network interface, as getifaddrs reports it.
struct InterfaceAddress {
  std::string name;  // "eth0"
  SocketAddress address;
  bool up = false;
  bool loopback = false;
};

// Every AF_INET / AF_INET6 address of every interface, in getifaddrs order.
Result<std::vector<InterfaceAddress>> listInterfaces();

// True when interface `name` matches an OBCCL_SOCKET_IFNAME spec in NCCL's grammar:
// comma-separated prefixes ("eth,ib"); a leading '=' makes them exact names; a leading '^'
// excludes the listed ones instead ("^docker,lo", "^=eth0"). An empty spec matches everything.
bool interfaceNameMatches(const std::string& name, const std::string& spec);

// Parses OBCCL_SOCKET_FAMILY ("", "AF_INET", "AF_INET6", also "4"/"6"); returns AF_UNSPEC,
// AF_INET or AF_INET6.
Result<int> parseSocketFamily(const std::string& text);

// Pure selection over a list of interfaces (testable without the host's interfaces): with a
// spec, the usable (up, not IPv6 link-local) addresses that match it, in list order; without
// one, the first usable address that is neither loopback nor docker*, else the loopback ones.
std::vector<InterfaceAddress> selectInterfaces(const std::vector<InterfaceAddress>& all,
                                               const std::string& spec, int family);

// The address to listen on for this host: the first result of selectInterfaces over the
// host's interfaces with `spec` and OBCCL_SOCKET_FAMILY. Fails naming the spec when none match.
Result<SocketAddress> chooseInterfaceAddress(const std::string& spec);

Status setNonBlocking(int fd);
Status setNoDelay(int fd);
// Asks for `bytes` of send and receive buffer (0: leave the kernel's autotuning alone). Best
// effort: skipped when net.core.{r,w}mem_max is smaller, since a clamped value would disable
// autotuning and make the buffer smaller than the default.
void setSocketBuffers(int fd, int bytes);

// Local and peer address of a connected or bound socket.
Result<SocketAddress> localAddressOf(int fd);
Result<SocketAddress> peerAddressOf(int fd);

// A listening TCP socket (non-blocking) on `addr`. Port 0 lets the kernel choose; the actual
// address is read back with getsockname and returned in *bound. SO_REUSEADDR is set so a
// restarted job can reuse a fixed port at once. bufferBytes goes to setSocketBuffers (inherited by
// accepted sockets).
Result<UniqueFd> listenOn(const SocketAddress& addr, SocketAddress* bound, int backlog = 128,
                          int bufferBytes = 0);
// Accepts one pending connection (non-blocking fd) if there is one: an invalid fd when none is
// waiting (EAGAIN). *peer receives the peer address.
Result<UniqueFd> acceptOne(int listenFd, SocketAddress* peer);
// Waits until listenFd has a connection or the deadline passes (obcclTimeout naming `what`).
Status waitReadable(int fd, const Deadline& deadline, const std::string& what);

// Connects (non-blocking fd, TCP_NODELAY set), retrying while the peer refuses or is not yet
// reachable, until the deadline: a root may start later than its ranks.
Result<UniqueFd> connectTo(const SocketAddress& addr, const Deadline& deadline,
                           int bufferBytes = 0);

// Reads or writes exactly len bytes, waiting with poll() until the deadline. EOF and resets are
// obcclRemoteError, an expired deadline obcclTimeout; messages name `peer`.
Status readFull(int fd, void* buf, size_t len, const Deadline& deadline, const std::string& peer);
Status writeFull(int fd, const void* buf, size_t len, const Deadline& deadline,
                 const std::string& peer);

}  // namespace obccl
