#include "multiproc/support/hostile.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "multiproc/support/fault_procs.h"

namespace obccl_fault {

const char* hostileKindName(HostileKind k) {
  switch (k) {
    case HostileKind::kGarbage:
      return "garbage";
    case HostileKind::kEarlyClose:
      return "early-close";
    case HostileKind::kReplay:
      return "replay";
    case HostileKind::kStalled:
      return "stalled";
    case HostileKind::kCount:
      break;
  }
  return "?";
}

void HostileTally::add(const HostileTally& o) {
  attempted += o.attempted;
  connectFailed += o.connectFailed;
  rejected += o.rejected;
  lingering += o.lingering;
  overfed += o.overfed;
}

std::string HostileTally::text() const {
  return "attempted " + std::to_string(attempted) + ", rejected " + std::to_string(rejected) +
         ", connect failed " + std::to_string(connectFailed) + ", still open at deadline " +
         std::to_string(lingering) + ", got too many bytes " + std::to_string(overfed);
}

namespace {

struct Slot {
  int fd = -1;
  HostileKind kind = HostileKind::kGarbage;
  bool connected = false;
  int64_t deadlineNs = 0;
  size_t received = 0;
};

// Resolves a numeric host and port.
bool makeAddress(const std::string& host, int port, sockaddr_storage* ss, socklen_t* len) {
  std::memset(ss, 0, sizeof(*ss));
  auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(*v4);
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(*v6);
    return true;
  }
  return false;
}

int localPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

class Flood {
 public:
  explicit Flood(const HostileOptions& o) : o_(o), tally_(static_cast<int>(HostileKind::kCount)) {}
  std::vector<HostileTally> run();

 private:
  void open();
  void onConnected(Slot& s);
  void onReadable(Slot& s);
  void finish(Slot& s, bool rejected);
  HostileTally& t(const Slot& s) { return tally_[static_cast<int>(s.kind)]; }

  const HostileOptions& o_;
  std::vector<HostileTally> tally_;
  std::vector<Slot> slots_;
  int made_ = 0;
  uint64_t rng_ = 0x9e3779b97f4a7c15ull;
};

void Flood::open() {
  Slot s;
  s.kind = o_.kinds[made_ % o_.kinds.size()];
  ++made_;
  ++t(s).attempted;
  sockaddr_storage ss;
  socklen_t len = 0;
  int port = o_.pickPort ? o_.pickPort() : o_.port;
  if (!makeAddress(o_.host, port, &ss, &len)) {
    ++t(s).connectFailed;
    return;
  }
  s.fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s.fd < 0) {
    ++t(s).connectFailed;
    return;
  }
  s.deadlineNs = nowNs() + 5000 * 1000000LL;  // to connect
  if (connect(s.fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    ++t(s).connectFailed;
    close(s.fd);
    return;
  }
  slots_.push_back(s);
}

void Flood::finish(Slot& s, bool rejected) {
  if (rejected) {
    ++t(s).rejected;
  } else {
    ++t(s).lingering;
  }
  close(s.fd);
  s.fd = -1;
}

void Flood::onConnected(Slot& s) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
    ++t(s).connectFailed;
    close(s.fd);
    s.fd = -1;
    return;
  }
  s.connected = true;
  if (o_.ownPorts != nullptr) o_.ownPorts->push_back(localPort(s.fd));
  s.deadlineNs = nowNs() + o_.lingerLimitMs * 1000000LL;
  switch (s.kind) {
    case HostileKind::kEarlyClose:
      return finish(s, true);
    case HostileKind::kGarbage: {
      uint8_t junk[300];
      size_t n = 1 + static_cast<size_t>(rng_ % sizeof(junk));
      for (size_t i = 0; i < n; ++i) {
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        junk[i] = static_cast<uint8_t>(rng_);
      }
      (void)send(s.fd, junk, n, MSG_NOSIGNAL);
      return;
    }
    case HostileKind::kReplay:
      if (!o_.replay.empty()) (void)send(s.fd, o_.replay.data(), o_.replay.size(), MSG_NOSIGNAL);
      return;
    case HostileKind::kStalled:
    case HostileKind::kCount:
      return;
  }
}

void Flood::onReadable(Slot& s) {
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = recv(s.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      if (s.received <= o_.maxServerBytes && s.received + n > o_.maxServerBytes) ++t(s).overfed;
      s.received += static_cast<size_t>(n);
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return finish(s, true);  // closed or reset by the server
    return;
  }
}

std::vector<HostileTally> Flood::run() {
  bool opening = true;
  while (true) {
    while (opening && made_ < o_.connections && static_cast<int>(slots_.size()) < o_.concurrency)
      open();
    if (slots_.empty() && (!opening || made_ >= o_.connections)) break;
    std::vector<pollfd> fds;
    for (const Slot& s : slots_)
      fds.push_back({s.fd, static_cast<short>(s.connected ? POLLIN : POLLOUT), 0});
    poll(fds.data(), fds.size(), 20);
    int64_t now = nowNs();
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (fds[i].revents != 0) {
        if (!s.connected) {
          onConnected(s);
        } else {
          onReadable(s);
        }
      }
      if (s.fd >= 0 && now > s.deadlineNs) {
        if (s.connected) {
          finish(s, false);
        } else {
          ++t(s).connectFailed;
          close(s.fd);
          s.fd = -1;
        }
      }
    }
    slots_.erase(
        std::remove_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.fd < 0; }),
        slots_.end());
    if (o_.onRound && !o_.onRound()) opening = false;
  }
  return tally_;
}

}  // namespace

std::vector<HostileTally> runHostileFlood(const HostileOptions& options) {
  Flood f(options);
  return f.run();
}

// ---- Sniffer ----------------------------------------------------------------------------------

LoopbackSniffer::~LoopbackSniffer() {
  if (fd_ >= 0) close(fd_);
}

bool LoopbackSniffer::start(int port, std::string* why) {
  port_ = port;
  fd_ = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd_ < 0) {
    *why = std::string("AF_PACKET socket: ") + std::strerror(errno) + " (needs CAP_NET_RAW)";
    return false;
  }
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = static_cast<int>(if_nametoindex("lo"));
  if (bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
    *why = std::string("bind to lo: ") + std::strerror(errno);
    return false;
  }
  int big = 8 << 20;
  setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  return true;
}

void LoopbackSniffer::pump() {
  uint8_t pkt[70000];
  for (;;) {
    sockaddr_ll from{};
    socklen_t fl = sizeof(from);
    ssize_t n = recvfrom(fd_, pkt, sizeof(pkt), 0, reinterpret_cast<sockaddr*>(&from), &fl);
    if (n <= 0) return;
    if (from.sll_pkttype == PACKET_OUTGOING) continue;  // each loopback packet shows up twice
    size_t ip = 0, tcpLen = 0;
    const uint8_t* tcp = nullptr;
    if ((pkt[0] >> 4) == 4 && n >= 20 && pkt[9] == IPPROTO_TCP) {
      ip = (pkt[0] & 0xf) * 4u;
      size_t total = (pkt[2] << 8) | pkt[3];
      tcp = pkt + ip;
      tcpLen = std::min<size_t>(total, n) - ip;
    } else if ((pkt[0] >> 4) == 6 && n >= 40 && pkt[6] == IPPROTO_TCP) {
      tcp = pkt + 40;
      tcpLen = std::min<size_t>((pkt[4] << 8) | pkt[5], n - 40);
    } else {
      continue;
    }
    if (tcpLen < 20) continue;
    int src = (tcp[0] << 8) | tcp[1], dst = (tcp[2] << 8) | tcp[3];
    if (dst != port_) continue;
    uint32_t seq = (uint32_t(tcp[4]) << 24) | (tcp[5] << 16) | (tcp[6] << 8) | tcp[7];
    size_t off = (tcp[12] >> 4) * 4u;
    bool syn = tcp[13] & 0x02;
    auto it =
        std::find_if(flows_.begin(), flows_.end(), [&](const auto& f) { return f.first == src; });
    if (syn) {
      if (it == flows_.end()) {
        flows_.push_back({src, Flow()});
        it = flows_.end() - 1;
      }
      it->second = Flow();
      it->second.nextSeq = seq + 1;
      continue;
    }
    if (it == flows_.end() || off >= tcpLen) continue;
    if (seq != it->second.nextSeq) continue;  // retransmission or reordering: rare on loopback
    it->second.data.insert(it->second.data.end(), tcp + off, tcp + tcpLen);
    it->second.nextSeq += static_cast<uint32_t>(tcpLen - off);
  }
}

bool LoopbackSniffer::take(size_t bytes, const std::vector<int>& ignore,
                           std::vector<uint8_t>* out) const {
  for (const auto& [port, flow] : flows_) {
    if (std::find(ignore.begin(), ignore.end(), port) != ignore.end()) continue;
    if (flow.data.size() < bytes) continue;
    out->assign(flow.data.begin(), flow.data.begin() + bytes);
    return true;
  }
  return false;
}

// ---- /proc and interfaces ---------------------------------------------------------------------

namespace {

std::vector<std::string> socketInodes(pid_t pid) {
  std::vector<std::string> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (int fd = 0; fd < 4096; ++fd) {
    char target[128];
    std::string link = dir + "/" + std::to_string(fd);
    ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    std::string t(target, n);
    if (t.rfind("socket:[", 0) == 0) out.push_back(t.substr(8, t.size() - 9));
  }
  return out;
}

std::string hexToAddress(const std::string& hex, bool v6) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!v6) {
    in_addr a{};
    a.s_addr = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
    inet_ntop(AF_INET, &a, buf, sizeof(buf));
  } else {
    in6_addr a{};
    for (int w = 0; w < 4; ++w) {
      uint32_t word = static_cast<uint32_t>(std::stoul(hex.substr(w * 8, 8), nullptr, 16));
      std::memcpy(reinterpret_cast<uint8_t*>(&a) + 4 * w, &word, 4);
    }
    inet_ntop(AF_INET6, &a, buf, sizeof(buf));
  }
  return buf;
}

}  // namespace

std::vector<ListenSocket> listeningSockets(const std::vector<pid_t>& pids) {
  std::vector<std::pair<std::string, pid_t>> inodes;
  for (pid_t pid : pids)
    for (const std::string& i : socketInodes(pid)) inodes.push_back({i, pid});
  std::vector<ListenSocket> out;
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    bool v6 = std::strstr(file, "tcp6") != nullptr;
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream w(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      w >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (st != "0A") continue;
      auto it = std::find_if(inodes.begin(), inodes.end(),
                             [&](const auto& p) { return p.first == inode; });
      if (it == inodes.end()) continue;
      size_t colon = local.find(':');
      ListenSocket s;
      s.address = hexToAddress(local.substr(0, colon), v6);
      s.port = static_cast<int>(std::stoul(local.substr(colon + 1), nullptr, 16));
      s.pid = it->second;
      out.push_back(s);
    }
  }
  return out;
}

std::string defaultInterfaceAddress() {
  ifaddrs* all = nullptr;
  std::string out = "127.0.0.1";
  if (getifaddrs(&all) != 0) return out;
  for (ifaddrs* i = all; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof(buf));
    out = buf;
    break;
  }
  freeifaddrs(all);
  return out;
}

int freePort(const std::string& host) {
  sockaddr_storage ss;
  socklen_t len = 0;
  if (!makeAddress(host, 0, &ss, &len)) return 0;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) port = localPort(fd);
  close(fd);
  return port;
}

}  // namespace obccl_fault
