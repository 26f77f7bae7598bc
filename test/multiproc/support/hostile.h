// Hostile TCP clients for test_fault_hostile.cc: many concurrent connections to a listener that
// send garbage, close at once, replay captured handshake bytes or stall, each watched until the
// server closes it; plus a loopback sniffer that captures a real client's first bytes to a port,
// and /proc/net/tcp readers that find listening sockets. Plain POSIX (no libobccl).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace obccl_fault {

enum class HostileKind { kGarbage, kEarlyClose, kReplay, kStalled, kCount };
const char* hostileKindName(HostileKind k);

struct HostileTally {
  int attempted = 0;
  int connectFailed = 0;  // refused or timed out before connecting
  int rejected = 0;       // the server closed it (or it closed itself at once: early close)
  int lingering = 0;      // still open at its deadline: NOT rejected
  int overfed = 0;        // the server sent more than a handshake's worth of bytes
  void add(const HostileTally& o);
  std::string text() const;
};

struct HostileOptions {
  std::string host;  // numeric IPv4 or IPv6 address
  int port = 0;
  int connections = 1000;          // total to make
  int concurrency = 128;           // open at once
  std::vector<HostileKind> kinds;  // used round robin
  std::vector<uint8_t> replay;     // bytes for kReplay (e.g. a captured hello + proof + join)
  int64_t lingerLimitMs = 8000;    // how long a connection may stay open after its last send
  size_t maxServerBytes = 80;      // a stranger never gets more than the hello and a proof
  // Called between poll rounds (sample memory, read the sniffer); false stops new connections.
  std::function<bool()> onRound;
  // Where each new connection goes (port on host); default: `port`.
  std::function<int()> pickPort;
  // Receives the local port of every connection made (so a sniffer can skip them).
  std::vector<int>* ownPorts = nullptr;
};

// Runs the flood to completion; the tallies are per kind.
std::vector<HostileTally> runHostileFlood(const HostileOptions& options);

// Captures the first `bytes` a client sends to `port` on the loopback device (AF_PACKET, needs
// CAP_NET_RAW), skipping connections from `ignorePorts`. start() may fail (returns false, *why).
class LoopbackSniffer {
 public:
  ~LoopbackSniffer();
  bool start(int port, std::string* why);
  // Reads every packet queued now (non-blocking).
  void pump();
  // The first `bytes` sent by a client flow (by source port) not in `ignore`, once one has sent
  // that many; false while none has.
  bool take(size_t bytes, const std::vector<int>& ignore, std::vector<uint8_t>* out) const;

 private:
  struct Flow {
    uint32_t nextSeq = 0;
    std::vector<uint8_t> data;
  };
  int fd_ = -1;
  int port_ = 0;
  std::vector<std::pair<int, Flow>> flows_;  // by client source port
};

// Listening TCP sockets (IPv4 and IPv6) owned by any of `pids`: "address:port" strings with the
// address as the kernel shows it bound ("0.0.0.0" for the wildcard).
struct ListenSocket {
  std::string address;
  int port = 0;
  pid_t pid = 0;
};
std::vector<ListenSocket> listeningSockets(const std::vector<pid_t>& pids);

// The first IPv4 address of an up, non-loopback interface, else 127.0.0.1 (obccl's default).
std::string defaultInterfaceAddress();
// A port that was free a moment ago on host.
int freePort(const std::string& host);

}  // namespace obccl_fault
