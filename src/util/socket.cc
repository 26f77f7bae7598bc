#include "util/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include "util/log.h"
#include "util/params.h"

namespace obccl {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0 && ::close(fd_) != 0)
    OBCCL_DEBUG(kSubsysTransport, "close(%d): %s", fd_, std::strerror(errno));
  fd_ = fd;
}

// ---- SocketAddress ----

SocketAddress SocketAddress::fromSockaddr(const struct sockaddr* sa, socklen_t len) {
  SocketAddress a;
  if (sa == nullptr) return a;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    std::memcpy(&a.storage_, sa, sizeof(sockaddr_in));
    a.len_ = sizeof(sockaddr_in);
  } else if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    std::memcpy(&a.storage_, sa, sizeof(sockaddr_in6));
    a.len_ = sizeof(sockaddr_in6);
  }
  return a;
}

Result<SocketAddress> SocketAddress::fromHostPort(const std::string& hostIn, uint16_t port) {
  std::string host = hostIn;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr)
    return invalidArgument("'" + hostIn + "' is not a numeric IPv4 or IPv6 address");
  SocketAddress a = fromSockaddr(res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (a.empty()) return invalidArgument("'" + hostIn + "' is not an IPv4 or IPv6 address");
  a.setPort(port);
  return a;
}

Result<SocketAddress> SocketAddress::parse(const std::string& text) {
  std::string host, portText;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return invalidArgument("address '" + text + "': expected [ipv6]:port");
    host = text.substr(1, close - 1);
    portText = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos)
      return invalidArgument("address '" + text + "': expected host:port");
    if (text.find(':') != colon)
      return invalidArgument("address '" + text + "': write an IPv6 address as [addr]:port");
    host = text.substr(0, colon);
    portText = text.substr(colon + 1);
  }
  if (host.empty()) return invalidArgument("address '" + text + "': empty host");
  char* end = nullptr;
  errno = 0;
  unsigned long port = std::strtoul(portText.c_str(), &end, 10);
  if (portText.empty() || *end != '\0' || errno != 0 || port > 65535)
    return invalidArgument("address '" + text + "': port '" + portText + "' is not in 0..65535");

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr)
    return invalidArgument("address '" + text + "': cannot resolve '" + host +
                           "': " + gai_strerror(rc));
  SocketAddress a;
  // Prefer the first IPv4 result: it is what most multi-homed setups expect from a hostname.
  for (addrinfo* r = res; r != nullptr && a.empty(); r = r->ai_next)
    if (r->ai_family == AF_INET) a = fromSockaddr(r->ai_addr, r->ai_addrlen);
  for (addrinfo* r = res; r != nullptr && a.empty(); r = r->ai_next)
    a = fromSockaddr(r->ai_addr, r->ai_addrlen);
  freeaddrinfo(res);
  if (a.empty()) return invalidArgument("address '" + text + "': no IPv4 or IPv6 address");
  a.setPort(static_cast<uint16_t>(port));
  return a;
}

SocketAddress SocketAddress::any(int family, uint16_t port) {
  SocketAddress a;
  if (family == AF_INET6) {
    auto* s = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_any;
    a.len_ = sizeof(sockaddr_in6);
  } else {
    auto* s = reinterpret_cast<sockaddr_in*>(&a.storage_);
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_ANY);
    a.len_ = sizeof(sockaddr_in);
  }
  a.setPort(port);
  return a;
}

int SocketAddress::family() const { return empty() ? AF_UNSPEC : storage_.ss_family; }

uint16_t SocketAddress::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

void SocketAddress::setPort(uint16_t port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
}

bool SocketAddress::isLoopback() const {
  if (family() == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr) >> 24) == 127;
  if (family() == AF_INET6)
    return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
  return false;
}

bool SocketAddress::isLinkLocal() const {
  return family() == AF_INET6 &&
         IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
}

std::string SocketAddress::host() const {
  if (empty()) return "(none)";
  char buf[NI_MAXHOST] = {0};
  if (getnameinfo(sockaddr(), len_, buf, sizeof(buf), nullptr, 0, NI_NUMERICHOST) != 0)
    return "(unprintable)";
  return buf;
}

std::string SocketAddress::toString() const {
  if (empty()) return "(none)";
  std::string h = host();
  if (family() == AF_INET6) h = "[" + h + "]";
  return h + ":" + std::to_string(port());
}

void SocketAddress::toWire(uint8_t* wire) const {
  std::memset(wire, 0, kWireBytes);
  wire[0] = family() == AF_INET ? 4 : family() == AF_INET6 ? 6 : 0;
  uint16_t p = port();
  wire[2] = static_cast<uint8_t>(p >> 8);
  wire[3] = static_cast<uint8_t>(p);
  if (family() == AF_INET) {
    std::memcpy(wire + 4, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, 4);
  } else if (family() == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&storage_);
    std::memcpy(wire + 4, &s->sin6_addr, 16);
    uint32_t scope = s->sin6_scope_id;
    for (int i = 0; i < 4; ++i) wire[20 + i] = static_cast<uint8_t>(scope >> (24 - 8 * i));
  }
}

Result<SocketAddress> SocketAddress::fromWire(const uint8_t* wire) {
  SocketAddress a;
  uint16_t port = static_cast<uint16_t>((wire[2] << 8) | wire[3]);
  if (wire[0] == 4) {
    auto* s = reinterpret_cast<sockaddr_in*>(&a.storage_);
    s->sin_family = AF_INET;
    std::memcpy(&s->sin_addr, wire + 4, 4);
    a.len_ = sizeof(sockaddr_in);
  } else if (wire[0] == 6) {
    auto* s = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    s->sin6_family = AF_INET6;
    std::memcpy(&s->sin6_addr, wire + 4, 16);
    uint32_t scope = 0;
    for (int i = 0; i < 4; ++i) scope = (scope << 8) | wire[20 + i];
    s->sin6_scope_id = scope;
    a.len_ = sizeof(sockaddr_in6);
  } else {
    return invalidArgument("malformed socket address (family tag " + std::to_string(wire[0]) + ")");
  }
  a.setPort(port);
  return a;
}

bool SocketAddress::operator==(const SocketAddress& o) const {
  if (family() != o.family() || port() != o.port()) return false;
  if (family() == AF_INET)
    return std::memcmp(&reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr,
                       &reinterpret_cast<const sockaddr_in*>(&o.storage_)->sin_addr, 4) == 0;
  if (family() == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&storage_);
    const auto* b = reinterpret_cast<const sockaddr_in6*>(&o.storage_);
    return std::memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0 &&
           a->sin6_scope_id == b->sin6_scope_id;
  }
  return true;  // both empty
}

// ---- Interfaces ----

Result<std::vector<InterfaceAddress>> listInterfaces() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return errnoStatus("getifaddrs", errno);
  std::vector<InterfaceAddress> out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    int fam = i->ifa_addr->sa_family;
    if (fam != AF_INET && fam != AF_INET6) continue;
    InterfaceAddress ia;
    ia.name = i->ifa_name;
    ia.address = SocketAddress::fromSockaddr(
        i->ifa_addr, fam == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    ia.up = (i->ifa_flags & IFF_UP) != 0 && (i->ifa_flags & IFF_RUNNING) != 0;
    ia.loopback = (i->ifa_flags & IFF_LOOPBACK) != 0 || ia.address.isLoopback();
    out.push_back(std::move(ia));
  }
  freeifaddrs(list);
  return out;
}

bool interfaceNameMatches(const std::string& name, const std::string& specIn) {
  std::string spec = specIn;
  bool exclude = false, exact = false;
  if (!spec.empty() && spec[0] == '^') {
    exclude = true;
    spec.erase(0, 1);
  }
  if (!spec.empty() && spec[0] == '=') {
    exact = true;
    spec.erase(0, 1);
  }
  bool listed = false;
  size_t start = 0;
  while (start <= spec.size() && !listed) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(start, comma - start);
    if (!item.empty()) listed = exact ? name == item : name.compare(0, item.size(), item) == 0;
    start = comma + 1;
  }
  if (spec.empty()) return true;
  return exclude ? !listed : listed;
}

Result<int> parseSocketFamily(const std::string& text) {
  if (text.empty()) return AF_UNSPEC;
  if (text == "AF_INET" || text == "4" || text == "ipv4") return AF_INET;
  if (text == "AF_INET6" || text == "6" || text == "ipv6") return AF_INET6;
  return invalidArgument("OBCCL_SOCKET_FAMILY: '" + text + "' is not AF_INET or AF_INET6");
}

std::vector<InterfaceAddress> selectInterfaces(const std::vector<InterfaceAddress>& all,
                                               const std::string& spec, int family) {
  std::vector<InterfaceAddress> usable;
  for (const auto& ia : all) {
    // Link-local IPv6 needs a scope on every peer's side; it is never what a job wants.
    if (!ia.up || ia.address.isLinkLocal()) continue;
    if (family != AF_UNSPEC && ia.address.family() != family) continue;
    usable.push_back(ia);
  }
  std::vector<InterfaceAddress> out;
  if (!spec.empty()) {
    for (const auto& ia : usable)
      if (interfaceNameMatches(ia.name, spec)) out.push_back(ia);
    return out;
  }
  for (const auto& ia : usable) {
    if (!ia.loopback && ia.name.compare(0, 6, "docker") != 0) {
      out.push_back(ia);
      return out;
    }
  }
  for (const auto& ia : usable)
    if (ia.loopback) out.push_back(ia);
  return out;
}

Result<SocketAddress> chooseInterfaceAddress(const std::string& spec) {
  OBCCL_ASSIGN_OR_RETURN(int family, parseSocketFamily(paramString("OBCCL_SOCKET_FAMILY")));
  OBCCL_ASSIGN_OR_RETURN(std::vector<InterfaceAddress> all, listInterfaces());
  std::vector<InterfaceAddress> chosen = selectInterfaces(all, spec, family);
  if (chosen.empty()) {
    std::string names;
    for (const auto& ia : all) names += (names.empty() ? "" : ", ") + ia.name;
    return invalidArgument("no usable network interface matches OBCCL_SOCKET_IFNAME='" + spec +
                           "' (interfaces: " + names + ")");
  }
  OBCCL_DEBUG(kSubsysInit, "using interface %s (%s)", chosen[0].name.c_str(),
              chosen[0].address.host().c_str());
  return chosen[0].address;
}

// ---- Socket options and I/O ----

Status setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return errnoStatus("fcntl(O_NONBLOCK)", errno);
  return Status::ok();
}

Status setNoDelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return errnoStatus("setsockopt(TCP_NODELAY)", errno);
  return Status::ok();
}

namespace {

int64_t readSysctl(const char* path) {
  std::ifstream in(path);
  int64_t v = -1;
  if (!(in >> v)) return -1;
  return v;
}

}  // namespace

void setSocketBuffers(int fd, int bytes) {
  if (bytes <= 0) return;
  static const int64_t rmemMax = readSysctl("/proc/sys/net/core/rmem_max");
  static const int64_t wmemMax = readSysctl("/proc/sys/net/core/wmem_max");
  if (wmemMax >= bytes && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) != 0)
    OBCCL_DEBUG(kSubsysTransport, "setsockopt(SO_SNDBUF, %d): %s", bytes, std::strerror(errno));
  if (rmemMax >= bytes && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) != 0)
    OBCCL_DEBUG(kSubsysTransport, "setsockopt(SO_RCVBUF, %d): %s", bytes, std::strerror(errno));
}

Result<SocketAddress> localAddressOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return errnoStatus("getsockname", errno);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Result<SocketAddress> peerAddressOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return errnoStatus("getpeername", errno);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Result<UniqueFd> listenOn(const SocketAddress& addr, SocketAddress* bound, int backlog,
                          int bufferBytes) {
  if (addr.empty()) return invalidArgument("listen: empty address");
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errnoStatus("socket() for listening on " + addr.toString(), errno);
  // Always: accepted sockets inherit it, so their TIME_WAIT leftovers do not block the next
  // job that listens on the same fixed port.
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
    return errnoStatus("setsockopt(SO_REUSEADDR) on " + addr.toString(), errno);
  setSocketBuffers(fd.get(), bufferBytes);
  if (::bind(fd.get(), addr.sockaddr(), addr.length()) != 0)
    return errnoStatus("bind to " + addr.toString(), errno);
  if (::listen(fd.get(), backlog) != 0) return errnoStatus("listen on " + addr.toString(), errno);
  // Read the port back from the bound socket itself: closing and rebinding would race.
  OBCCL_ASSIGN_OR_RETURN(SocketAddress actual, localAddressOf(fd.get()));
  if (bound != nullptr) *bound = actual;
  return fd;
}

Result<UniqueFd> acceptOne(int listenFd, SocketAddress* peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int fd =
      ::accept4(listenFd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    // Errors of the pending connection itself (reset before accept) are not the listener's.
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED ||
        errno == EPROTO)
      return UniqueFd();
    return errnoStatus("accept", errno);
  }
  UniqueFd out(fd);
  if (peer != nullptr) *peer = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  (void)setNoDelay(fd);  // Fails harmlessly on non-TCP sockets.
  return out;
}

Status waitReadable(int fd, const Deadline& deadline, const std::string& what) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, deadline.remainingMs());
    if (rc > 0) return Status::ok();
    if (rc < 0 && errno != EINTR) return errnoStatus("poll while waiting for " + what, errno);
    if (rc == 0 && deadline.expired()) return timeoutError("timed out waiting for " + what);
  }
}

namespace {

bool retryableConnectError(int err) {
  return err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH ||
         err == ECONNRESET || err == EAGAIN;
}

// One connect attempt: 0 on success, else the errno of the failure.
int connectOnce(const SocketAddress& addr, const Deadline& deadline, int bufferBytes,
                UniqueFd* out) {
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errno;
  setSocketBuffers(fd.get(), bufferBytes);
  if (::connect(fd.get(), addr.sockaddr(), addr.length()) != 0) {
    if (errno != EINPROGRESS) return errno;
    for (;;) {
      pollfd p{fd.get(), POLLOUT, 0};
      int rc = ::poll(&p, 1, deadline.remainingMs());
      if (rc > 0) break;
      if (rc < 0 && errno != EINTR) return errno;
      if (rc == 0 && deadline.expired()) return ETIMEDOUT;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    if (err != 0) return err;
  }
  (void)setNoDelay(fd.get());
  *out = std::move(fd);
  return 0;
}

}  // namespace

Result<UniqueFd> connectTo(const SocketAddress& addr, const Deadline& deadline, int bufferBytes) {
  if (addr.empty()) return invalidArgument("connect: empty address");
  int backoffMs = 5;
  int attempts = 0;
  for (;;) {
    UniqueFd fd;
    int err = connectOnce(addr, deadline, bufferBytes, &fd);
    ++attempts;
    if (err == 0) return fd;
    if (!retryableConnectError(err)) return errnoStatus("connect to " + addr.toString(), err);
    if (deadline.expired())
      return timeoutError("could not connect to " + addr.toString() + " before the deadline (" +
                          std::to_string(attempts) + " attempts, last: " + std::strerror(err) +
                          ")");
    // Back off, so a root that starts late is not flooded, but never sleep past the deadline.
    std::this_thread::sleep_for(std::chrono::milliseconds(deadline.remainingMs(backoffMs)));
    backoffMs = std::min(backoffMs * 2, 200);
  }
}

Status readFull(int fd, void* buf, size_t len, const Deadline& deadline, const std::string& peer) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::recv(fd, p + got, len - got, MSG_DONTWAIT);
    if (n > 0) {
      got += static_cast<size_t>(n);
      continue;
    }
    if (n == 0)
      return remoteError("connection closed by " + peer + " (" + std::to_string(got) + " of " +
                         std::to_string(len) + " bytes read)");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == ECONNRESET) return remoteError("connection reset by " + peer);
      return errnoStatus("recv from " + peer, errno);
    }
    pollfd pfd{fd, POLLIN, 0};
    int rc = ::poll(&pfd, 1, deadline.remainingMs());
    if (rc < 0 && errno != EINTR) return errnoStatus("poll for " + peer, errno);
    if (rc == 0 && deadline.expired())
      return timeoutError("timed out reading from " + peer + " (" + std::to_string(got) + " of " +
                          std::to_string(len) + " bytes)");
  }
  return Status::ok();
}

Status writeFull(int fd, const void* buf, size_t len, const Deadline& deadline,
                 const std::string& peer) {
  const auto* p = static_cast<const uint8_t*>(buf);
  size_t sent = 0;
  while (sent < len) {
    ssize_t n = ::send(fd, p + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == ECONNRESET || errno == EPIPE)
        return remoteError("connection to " + peer + " lost (" + std::strerror(errno) + ")");
      return errnoStatus("send to " + peer, errno);
    }
    pollfd pfd{fd, POLLOUT, 0};
    int rc = ::poll(&pfd, 1, deadline.remainingMs());
    if (rc < 0 && errno != EINTR) return errnoStatus("poll for " + peer, errno);
    if (rc == 0 && deadline.expired())
      return timeoutError("timed out writing to " + peer + " (" + std::to_string(sent) + " of " +
                          std::to_string(len) + " bytes)");
  }
  return Status::ok();
}

}  // namespace obccl
