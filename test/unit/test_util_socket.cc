// Socket addresses, interface selection grammar and the deadline-bounded socket helpers.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "util/socket.h"

namespace obccl {
namespace {

TEST(SocketAddress, ParsesAndFormatsIpv4) {
  auto a = SocketAddress::parse("198.18.0.2:40123");
  ASSERT_TRUE(a.isOk()) << a.status().message();
  EXPECT_EQ(a.value().family(), AF_INET);
  EXPECT_EQ(a.value().port(), 40123);
  EXPECT_EQ(a.value().host(), "198.18.0.2");
  EXPECT_EQ(a.value().toString(), "198.18.0.2:40123");
  EXPECT_FALSE(a.value().isLoopback());
}

TEST(SocketAddress, ParsesAndFormatsIpv6) {
  auto a = SocketAddress::parse("[::1]:80");
  ASSERT_TRUE(a.isOk()) << a.status().message();
  EXPECT_EQ(a.value().family(), AF_INET6);
  EXPECT_EQ(a.value().toString(), "[::1]:80");
  EXPECT_TRUE(a.value().isLoopback());
  auto b = SocketAddress::parse("[2001:db8::5]:65535");
  ASSERT_TRUE(b.isOk());
  EXPECT_EQ(b.value().toString(), "[2001:db8::5]:65535");
}

TEST(SocketAddress, ResolvesHostnames) {
  auto a = SocketAddress::parse("localhost:1234");
  ASSERT_TRUE(a.isOk()) << a.status().message();
  EXPECT_TRUE(a.value().isLoopback());
  EXPECT_EQ(a.value().port(), 1234);
}

TEST(SocketAddress, RejectsMalformedText) {
  for (const char* bad : {"", "1.2.3.4", "1.2.3.4:", ":80", "1.2.3.4:65536", "1.2.3.4:8x", "::1:80",
                          "[::1]80", "[::1", "no-such-host.invalid:80"}) {
    auto a = SocketAddress::parse(bad);
    EXPECT_FALSE(a.isOk()) << bad;
    if (!a.isOk()) {
      EXPECT_EQ(a.status().code(), obcclInvalidArgument) << bad;
    }
  }
}

TEST(SocketAddress, EqualityAndWireRoundTrip) {
  for (const char* text : {"10.1.2.3:7", "[fe80::1]:9", "[2001:db8::1]:65000", "127.0.0.1:0"}) {
    SocketAddress a = SocketAddress::parse(text).value();
    uint8_t wire[SocketAddress::kWireBytes];
    a.toWire(wire);
    auto b = SocketAddress::fromWire(wire);
    ASSERT_TRUE(b.isOk());
    EXPECT_EQ(a, b.value()) << text;
    EXPECT_EQ(b.value().toString(), a.toString());
  }
  EXPECT_NE(SocketAddress::parse("10.0.0.1:1").value(), SocketAddress::parse("10.0.0.1:2").value());
  EXPECT_NE(SocketAddress::parse("10.0.0.1:1").value(), SocketAddress::parse("10.0.0.2:1").value());
  EXPECT_NE(SocketAddress::parse("127.0.0.1:1").value(), SocketAddress::parse("[::1]:1").value());
  EXPECT_EQ(SocketAddress(), SocketAddress());
  uint8_t junk[SocketAddress::kWireBytes] = {9};
  EXPECT_FALSE(SocketAddress::fromWire(junk).isOk());
}

TEST(InterfaceGrammar, PrefixExactAndExclude) {
  EXPECT_TRUE(interfaceNameMatches("eth0", ""));
  EXPECT_TRUE(interfaceNameMatches("eth0", "eth"));
  EXPECT_TRUE(interfaceNameMatches("ib1", "eth,ib"));
  EXPECT_FALSE(interfaceNameMatches("lo", "eth,ib"));
  EXPECT_TRUE(interfaceNameMatches("eth0", "=eth0"));
  EXPECT_FALSE(interfaceNameMatches("eth01", "=eth0"));
  EXPECT_FALSE(interfaceNameMatches("docker0", "^docker,lo"));
  EXPECT_FALSE(interfaceNameMatches("lo", "^docker,lo"));
  EXPECT_TRUE(interfaceNameMatches("eth0", "^docker,lo"));
  EXPECT_FALSE(interfaceNameMatches("eth0", "^=eth0"));
  EXPECT_TRUE(interfaceNameMatches("eth01", "^=eth0"));
  EXPECT_TRUE(interfaceNameMatches("eth1", "^=eth0,eth2"));
}

InterfaceAddress iface(const char* name, const char* addr, bool up = true, bool lo = false) {
  InterfaceAddress ia;
  ia.name = name;
  ia.address = SocketAddress::parse(addr).value();
  ia.up = up;
  ia.loopback = lo;
  return ia;
}

std::vector<std::string> names(const std::vector<InterfaceAddress>& v) {
  std::vector<std::string> out;
  for (const auto& ia : v) out.push_back(ia.name + "/" + ia.address.host());
  return out;
}

TEST(InterfaceSelection, DefaultSkipsLoopbackDockerAndDownInterfaces) {
  std::vector<InterfaceAddress> all = {
      iface("lo", "127.0.0.1:0", true, true), iface("docker0", "172.17.0.1:0"),
      iface("eth0", "198.18.0.9:0", false),   iface("eth1", "[fe80::1]:0"),
      iface("eth1", "198.18.0.2:0"),          iface("ib0", "198.19.0.2:0")};
  EXPECT_EQ(names(selectInterfaces(all, "", AF_UNSPEC)),
            std::vector<std::string>{"eth1/198.18.0.2"});
  EXPECT_EQ(names(selectInterfaces(all, "ib", AF_UNSPEC)),
            std::vector<std::string>{"ib0/198.19.0.2"});
  EXPECT_EQ(names(selectInterfaces(all, "^eth,lo", AF_UNSPEC)),
            (std::vector<std::string>{"docker0/172.17.0.1", "ib0/198.19.0.2"}));
  EXPECT_EQ(names(selectInterfaces(all, "=lo", AF_UNSPEC)),
            std::vector<std::string>{"lo/127.0.0.1"});
  EXPECT_TRUE(selectInterfaces(all, "=eth", AF_UNSPEC).empty());
  EXPECT_TRUE(selectInterfaces(all, "eth0", AF_UNSPEC).empty());  // down
}

TEST(InterfaceSelection, FallsBackToLoopbackAndHonoursFamily) {
  std::vector<InterfaceAddress> all = {iface("lo", "127.0.0.1:0", true, true),
                                       iface("lo", "[::1]:0", true, true),
                                       iface("docker0", "172.17.0.1:0")};
  EXPECT_EQ(names(selectInterfaces(all, "", AF_UNSPEC)),
            (std::vector<std::string>{"lo/127.0.0.1", "lo/::1"}));
  EXPECT_EQ(names(selectInterfaces(all, "", AF_INET6)), std::vector<std::string>{"lo/::1"});
  EXPECT_EQ(parseSocketFamily("AF_INET6").value(), AF_INET6);
  EXPECT_EQ(parseSocketFamily("").value(), AF_UNSPEC);
  EXPECT_FALSE(parseSocketFamily("AF_UNIX").isOk());
}

TEST(InterfaceSelection, HostHasAUsableInterface) {
  auto list = listInterfaces();
  ASSERT_TRUE(list.isOk()) << list.status().message();
  auto addr = chooseInterfaceAddress("");
  ASSERT_TRUE(addr.isOk()) << addr.status().message();
  auto lo = chooseInterfaceAddress("=lo");
  ASSERT_TRUE(lo.isOk()) << lo.status().message();
  EXPECT_TRUE(lo.value().isLoopback());
  auto none = chooseInterfaceAddress("=no-such-interface");
  EXPECT_EQ(none.status().code(), obcclInvalidArgument);
  EXPECT_NE(none.status().message().find("no-such-interface"), std::string::npos);
}

TEST(Sockets, ListenOnPortZeroReportsKernelPort) {
  SocketAddress bound;
  auto lis = listenOn(SocketAddress::parse("127.0.0.1:0").value(), &bound);
  ASSERT_TRUE(lis.isOk()) << lis.status().message();
  EXPECT_NE(bound.port(), 0);
  EXPECT_EQ(bound.host(), "127.0.0.1");
  EXPECT_EQ(localAddressOf(lis.value().get()).value(), bound);
}

TEST(Sockets, FixedPortCanBeReusedAtOnce) {
  SocketAddress bound;
  auto lis = listenOn(SocketAddress::parse("127.0.0.1:0").value(), &bound);
  ASSERT_TRUE(lis.isOk());
  {
    auto c = connectTo(bound, Deadline::afterMs(2000));
    ASSERT_TRUE(c.isOk());
    ASSERT_TRUE(waitReadable(lis.value().get(), Deadline::afterMs(2000), "accept").isOk());
    auto s = acceptOne(lis.value().get(), nullptr);
    ASSERT_TRUE(s.isOk() && s.value().valid());
  }  // Closed connections leave TIME_WAIT behind.
  lis = Result<UniqueFd>(UniqueFd());
  auto again = listenOn(bound, nullptr);
  EXPECT_TRUE(again.isOk()) << again.status().message();
}

TEST(Sockets, ConnectRetriesUntilTheListenerAppears) {
  // Find a free port, close it, and start listening there only after a delay.
  SocketAddress bound;
  { ASSERT_TRUE(listenOn(SocketAddress::parse("127.0.0.1:0").value(), &bound).isOk()); }
  UniqueFd late;
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    auto l = listenOn(bound, nullptr);
    if (l.isOk()) late = std::move(l).value();
  });
  auto c = connectTo(bound, Deadline::afterMs(5000));
  t.join();
  EXPECT_TRUE(c.isOk()) << c.status().message();
}

TEST(Sockets, ConnectGivesUpAtTheDeadline) {
  SocketAddress bound;
  { ASSERT_TRUE(listenOn(SocketAddress::parse("127.0.0.1:0").value(), &bound).isOk()); }
  auto start = std::chrono::steady_clock::now();
  auto c = connectTo(bound, Deadline::afterMs(200));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  EXPECT_EQ(c.status().code(), obcclTimeout);
  EXPECT_NE(c.status().message().find(bound.toString()), std::string::npos);
  EXPECT_LT(ms, 1000);
}

TEST(Sockets, ReadFullTimesOutAndReportsEof) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  char buf[8];
  Status s = readFull(a.get(), buf, sizeof(buf), Deadline::afterMs(50), "peer X");
  EXPECT_EQ(s.code(), obcclTimeout);
  EXPECT_NE(s.message().find("peer X"), std::string::npos);
  ASSERT_TRUE(writeFull(b.get(), "abc", 3, Deadline::afterMs(1000), "peer Y").isOk());
  b.reset();
  s = readFull(a.get(), buf, sizeof(buf), Deadline::afterMs(1000), "peer X");
  EXPECT_EQ(s.code(), obcclRemoteError);
  EXPECT_NE(s.message().find("3 of 8"), std::string::npos) << s.message();
}

TEST(UniqueFd, ClosesAndMoves) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  UniqueFd w(fds[1]);
  {
    UniqueFd r(fds[0]);
    UniqueFd moved = std::move(r);
    EXPECT_FALSE(r.valid());
    EXPECT_EQ(moved.get(), fds[0]);
  }
  // The read end is closed now, so writing fails with EPIPE (SIGPIPE ignored here).
  signal(SIGPIPE, SIG_IGN);
  EXPECT_EQ(write(w.get(), "x", 1), -1);
}

}  // namespace
}  // namespace obccl
