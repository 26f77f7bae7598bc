// Mutual HMAC authentication: success, wrong secrets, replayed transcripts, reflection, ids.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <future>
#include <thread>

#include "util/auth.h"
#include "util/socket.h"

namespace obccl {
namespace {

std::vector<uint8_t> secretOf(uint8_t seed) {
  std::vector<uint8_t> s(32);
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>(seed * 31 + i);
  return s;
}

AuthOptions options(AuthRole role, int64_t id, std::vector<uint8_t> secret,
                    std::string purpose = "bootstrap", uint64_t commId = 42) {
  AuthOptions o;
  o.purpose = std::move(purpose);
  o.commId = commId;
  o.secret = std::move(secret);
  o.role = role;
  o.selfId = id;
  o.peerName = role == AuthRole::kClient ? "root at test:1" : "rank at test:2";
  return o;
}

// Runs both ends over a socketpair, in two threads.
std::pair<Result<int64_t>, Result<int64_t>> runPair(const AuthOptions& client,
                                                    const AuthOptions& server) {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  auto fut = std::async(std::launch::async, [&] {
    Result<int64_t> r = authenticatePeer(b.get(), server, Deadline::afterMs(5000));
    if (!r.isOk()) b.reset();  // A failing side hangs up, as every caller does.
    return r;
  });
  Result<int64_t> rc = authenticatePeer(a.get(), client, Deadline::afterMs(5000));
  if (!rc.isOk()) a.reset();
  return {std::move(rc), fut.get()};
}

TEST(Auth, SameSecretSucceedsBothWays) {
  auto [c, s] = runPair(options(AuthRole::kClient, 3, secretOf(1)),
                        options(AuthRole::kServer, -1, secretOf(1)));
  ASSERT_TRUE(c.isOk()) << c.status().message();
  ASSERT_TRUE(s.isOk()) << s.status().message();
  EXPECT_EQ(c.value(), -1);
  EXPECT_EQ(s.value(), 3);
}

TEST(Auth, WrongSecretIsRejectedOnBothSides) {
  auto [c, s] = runPair(options(AuthRole::kClient, 3, secretOf(1)),
                        options(AuthRole::kServer, -1, secretOf(2)));
  EXPECT_EQ(c.status().code(), obcclRemoteError);
  EXPECT_EQ(s.status().code(), obcclRemoteError);
  EXPECT_NE(c.status().message().find("root at test:1"), std::string::npos);
  EXPECT_NE(s.status().message().find("rank at test:2"), std::string::npos);
  EXPECT_NE(s.status().message().find("secret"), std::string::npos) << s.status().message();
}

TEST(Auth, PurposeAndCommIdAreBound) {
  auto [c1, s1] = runPair(options(AuthRole::kClient, 0, secretOf(1), "bootstrap"),
                          options(AuthRole::kServer, 1, secretOf(1), "tcp-data"));
  EXPECT_FALSE(c1.isOk());
  EXPECT_FALSE(s1.isOk());
  auto [c2, s2] = runPair(options(AuthRole::kClient, 0, secretOf(1), "tcp-data", 1),
                          options(AuthRole::kServer, 1, secretOf(1), "tcp-data", 2));
  EXPECT_FALSE(c2.isOk());
  EXPECT_FALSE(s2.isOk());
}

TEST(Auth, ExpectedPeerIdIsEnforced) {
  AuthOptions server = options(AuthRole::kServer, 0, secretOf(1), "tcp-data");
  server.expectedPeerId = 5;
  auto [c, s] = runPair(options(AuthRole::kClient, 4, secretOf(1), "tcp-data"), server);
  EXPECT_FALSE(c.isOk());
  EXPECT_EQ(s.status().code(), obcclRemoteError);
  EXPECT_NE(s.status().message().find("claims id 4"), std::string::npos);
}

TEST(Auth, ReplayedTranscriptIsRejected) {
  // A legitimate exchange, recorded by an eavesdropper.
  auto client = AuthHandshake::start(options(AuthRole::kClient, 2, secretOf(1)));
  auto server1 = AuthHandshake::start(options(AuthRole::kServer, -1, secretOf(1)));
  ASSERT_TRUE(client.isOk() && server1.isOk());
  AuthHello clientHello = client.value().hello();
  auto clientProof = client.value().onPeerHello(server1.value().hello().data());
  ASSERT_TRUE(clientProof.isOk());
  ASSERT_TRUE(server1.value().onPeerHello(clientHello.data()).isOk());
  ASSERT_TRUE(server1.value().onPeerProof(clientProof.value().data()).isOk());
  // Replaying the client's hello and proof to a new server: its fresh nonce makes it fail.
  auto server2 = AuthHandshake::start(options(AuthRole::kServer, -1, secretOf(1)));
  ASSERT_TRUE(server2.isOk());
  ASSERT_TRUE(server2.value().onPeerHello(clientHello.data()).isOk());
  EXPECT_EQ(server2.value().onPeerProof(clientProof.value().data()).code(), obcclRemoteError);
}

TEST(Auth, ReflectedHelloIsRejected) {
  auto server = AuthHandshake::start(options(AuthRole::kServer, -1, secretOf(1)));
  ASSERT_TRUE(server.isOk());
  AuthHello own = server.value().hello();
  EXPECT_EQ(server.value().onPeerHello(own.data()).status().code(), obcclRemoteError);
  // Even with the role byte flipped, its own nonce coming back is refused.
  own[5] = static_cast<uint8_t>(AuthRole::kClient);
  EXPECT_EQ(server.value().onPeerHello(own.data()).status().code(), obcclRemoteError);
}

TEST(Auth, GarbageHelloIsRejected) {
  auto server = AuthHandshake::start(options(AuthRole::kServer, -1, secretOf(1)));
  ASSERT_TRUE(server.isOk());
  AuthHello junk{};
  junk.fill('G');
  auto r = server.value().onPeerHello(junk.data());
  EXPECT_EQ(r.status().code(), obcclRemoteError);
  EXPECT_NE(r.status().message().find("bad magic"), std::string::npos);
  EXPECT_EQ(server.value().onPeerProof(junk.data()).code(), obcclInternalError);
}

TEST(Auth, NoncesAreFresh) {
  auto a = AuthHandshake::start(options(AuthRole::kClient, 1, secretOf(1)));
  auto b = AuthHandshake::start(options(AuthRole::kClient, 1, secretOf(1)));
  ASSERT_TRUE(a.isOk() && b.isOk());
  EXPECT_NE(a.value().hello(), b.value().hello());
}

TEST(Auth, EmptySecretIsInvalid) {
  auto a = AuthHandshake::start(options(AuthRole::kClient, 1, {}));
  EXPECT_EQ(a.status().code(), obcclInvalidArgument);
}

TEST(Auth, SilentPeerTimesOut) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  auto start = std::chrono::steady_clock::now();
  auto r =
      authenticatePeer(a.get(), options(AuthRole::kClient, 1, secretOf(1)), Deadline::afterMs(100));
  EXPECT_EQ(r.status().code(), obcclTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

}  // namespace
}  // namespace obccl
