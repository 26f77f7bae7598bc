// Bad input to every function of obccl.h: the result code, an untouched output, a last-error
// message that names the argument, and a communicator that still works afterwards.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

#include "multirank/harness.h"

namespace obccl_test {
namespace {

// Expects code and a last error (of comm, or of this thread for NULL) that contains `name`.
#define EXPECT_BAD(call, code, comm, name)                                          \
  do {                                                                              \
    obcclResult_t rc_ = (call);                                                     \
    EXPECT_EQ(rc_, code) << #call;                                                  \
    std::string msg_ = obcclGetLastError(comm);                                     \
    EXPECT_NE(msg_.find(name), std::string::npos)                                   \
        << #call << ": last error '" << msg_ << "' does not name '" << name << "'"; \
    std::string tmsg_ = obcclGetLastError(nullptr);                                 \
    EXPECT_EQ(tmsg_, msg_) << #call << ": thread's last error differs";             \
  } while (0)

const obcclComm_t kSentinel = reinterpret_cast<obcclComm_t>(0x5a5a5a5a);

TEST(ApiArgs, ErrorStringsCoverEveryCode) {
  std::set<std::string> seen;
  for (int c = 0; c < obcclNumResults; ++c) {
    const char* s = obcclGetErrorString(static_cast<obcclResult_t>(c));
    ASSERT_NE(s, nullptr);
    EXPECT_TRUE(seen.insert(s).second) << "duplicate string for code " << c;
  }
  EXPECT_NE(obcclGetErrorString(static_cast<obcclResult_t>(999)), nullptr);
  int v = 0;
  EXPECT_EQ(obcclGetVersion(&v), obcclSuccess);
  EXPECT_EQ(v, OBCCL_VERSION_CODE);
  EXPECT_BAD(obcclGetVersion(nullptr), obcclInvalidArgument, nullptr, "version");
  EXPECT_BAD(obcclGetUniqueId(nullptr), obcclInvalidArgument, nullptr, "uniqueId");
}

TEST(ApiArgs, LastErrorIsPerThreadForNullComm) {
  EXPECT_EQ(obcclGetVersion(nullptr), obcclInvalidArgument);
  std::string other;
  std::thread([&] { other = obcclGetLastError(nullptr); }).join();
  EXPECT_EQ(other.find("version"), std::string::npos) << "another thread saw: " << other;
}

TEST(ApiArgs, InitRejectsBadArgumentsWithoutWritingTheHandle) {
  obcclUniqueId id;
  ASSERT_EQ(obcclGetUniqueId(&id), obcclSuccess);
  obcclComm_t c = kSentinel;
  EXPECT_BAD(obcclCommInitRank(nullptr, 2, id, 0), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclCommInitRank(&c, 0, id, 0), obcclInvalidArgument, nullptr, "nranks");
  EXPECT_BAD(obcclCommInitRank(&c, 2, id, -1), obcclInvalidArgument, nullptr, "rank");
  EXPECT_BAD(obcclCommInitRank(&c, 2, id, 2), obcclInvalidArgument, nullptr, "rank");
  obcclUniqueId garbled = id;
  for (int i = 0; i < OBCCL_UNIQUE_ID_BYTES; i += 7) garbled.internal[i] ^= 0x5b;
  EXPECT_BAD(obcclCommInitRank(&c, 2, garbled, 0), obcclInvalidArgument, nullptr, "commId");
  EXPECT_EQ(c, kSentinel);
}

TEST(ApiArgs, InitRejectsBadConfigNamingTheField) {
  obcclUniqueId id;
  ASSERT_EQ(obcclGetUniqueId(&id), obcclSuccess);
  obcclComm_t c = kSentinel;
  struct Case {
    void (*mutate)(obcclConfig_t*);
    const char* name;
  };
  const Case cases[] = {
      {[](obcclConfig_t* x) { x->size = 3; }, "config->size"},
      {[](obcclConfig_t* x) { x->magic = 1; }, "config->magic"},
      {[](obcclConfig_t* x) { x->version = 0; }, "config->version"},
      {[](obcclConfig_t* x) { x->blocking = 2; }, "config->blocking"},
      {[](obcclConfig_t* x) { x->timeoutMs = -5; }, "config->timeoutMs"},
      {[](obcclConfig_t* x) { x->transports = "tcp,carrier-pigeon"; }, "config->transports"},
      {[](obcclConfig_t* x) { x->compressBlock = 7; }, "config->compressBlock"},
      {[](obcclConfig_t* x) { x->hierarchical = 5; }, "config->hierarchical"},
  };
  for (const Case& k : cases) {
    obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
    k.mutate(&cfg);
    EXPECT_BAD(obcclCommInitRankConfig(&c, 1, id, 0, &cfg), obcclInvalidArgument, nullptr, k.name);
  }
  EXPECT_EQ(c, kSentinel);
}

// Sets environment variables for one scope and restores them.
class ScopedEnv {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old != nullptr, old ? old : ""});
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->had) {
        setenv(it->name.c_str(), it->value.c_str(), 1);
      } else {
        unsetenv(it->name.c_str());
      }
    }
  }

 private:
  struct Saved {
    std::string name;
    bool had;
    std::string value;
  };
  std::vector<Saved> saved_;
};

TEST(ApiArgs, InitFromEnvExplainsWhatIsMissing) {
  ScopedEnv env;
  for (const char* v :
       {"OBCCL_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID",
        "OBCCL_WORLD_SIZE", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS",
        "OBCCL_ROOT", "MASTER_ADDR", "MASTER_PORT", "OBCCL_SECRET", "OBCCL_ALLOW_UNAUTHENTICATED"})
    env.set(v, nullptr);
  obcclComm_t c = kSentinel;
  EXPECT_BAD(obcclCommInitFromEnv(nullptr, nullptr), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "OBCCL_RANK");
  env.set("PMI_RANK", "0");
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "OBCCL_WORLD_SIZE");
  env.set("SLURM_NTASKS", "1");
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "MASTER_ADDR");
  env.set("MASTER_ADDR", "127.0.0.1");
  env.set("MASTER_PORT", "1");
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "OBCCL_SECRET=");
  EXPECT_NE(std::string(obcclGetLastError(nullptr)).find("OBCCL_ALLOW_UNAUTHENTICATED"),
            std::string::npos);
  env.set("OBCCL_SECRET", "abcdef");  // too short
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "OBCCL_SECRET");
  env.set("OBCCL_SECRET", "0123456789abcdef0123456789abcdeg");  // not hex
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "OBCCL_SECRET");
  env.set("PMI_RANK", "3");  // outside the world size
  EXPECT_BAD(obcclCommInitFromEnv(&c, nullptr), obcclInvalidArgument, nullptr, "rank");
  EXPECT_EQ(c, kSentinel);
}

// A port the kernel considers free right now (for a root address fixed in advance).
int freePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

TEST(ApiArgs, InitFromEnvJoinsAOneRankJob) {
  ScopedEnv env;
  env.set("OBCCL_RANK", "0");
  env.set("OBCCL_WORLD_SIZE", "1");
  env.set("OBCCL_ROOT", ("127.0.0.1:" + std::to_string(freePort())).c_str());
  env.set("OBCCL_SECRET", "00112233445566778899aabbccddeeff");
  obcclComm_t c = nullptr;
  obcclResult_t rc = obcclCommInitFromEnv(&c, nullptr);
  ASSERT_EQ(rc, obcclSuccess) << obcclGetLastError(nullptr);
  float x = 2;
  EXPECT_EQ(obcclAllReduce(&x, &x, 1, obcclFloat32, obcclSum, c, nullptr), obcclSuccess);
  EXPECT_EQ(obcclCommDestroy(c), obcclSuccess);
}

class ApiArgsOnWorld : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = makeWorld(2, "tcp");
    ASSERT_TRUE(world_.ok()) << world_.error;
  }
  // Both ranks still run a collective correctly.
  void expectStillWorks() {
    std::vector<std::vector<int32_t>> v(2, std::vector<int32_t>(100, 3));
    auto rcs = runRanks<obcclResult_t>(
        2,
        [&](int r) {
          return obcclAllReduce(v[r].data(), v[r].data(), 100, obcclInt32, obcclSum, world_[r],
                                nullptr);
        },
        &world_.comms);
    EXPECT_EQ(rcs[0], obcclSuccess) << obcclGetLastError(world_[0]);
    EXPECT_EQ(rcs[1], obcclSuccess) << obcclGetLastError(world_[1]);
    EXPECT_EQ(v[1][99], 6);
  }
  World world_;
};

TEST_F(ApiArgsOnWorld, QueriesRejectNullOutputs) {
  obcclComm_t c = world_[0];
  EXPECT_BAD(obcclCommCount(c, nullptr), obcclInvalidArgument, c, "count");
  EXPECT_BAD(obcclCommUserRank(c, nullptr), obcclInvalidArgument, c, "rank");
  EXPECT_BAD(obcclCommGetAsyncError(c, nullptr), obcclInvalidArgument, c, "asyncError");
  EXPECT_BAD(obcclCommGetStats(c, nullptr), obcclInvalidArgument, c, "stats");
  obcclCommStats_t st;
  std::memset(&st, 0x77, sizeof(st));
  st.size = 8;
  EXPECT_BAD(obcclCommGetStats(c, &st), obcclInvalidArgument, c, "stats->size");
  EXPECT_EQ(st.collectives, 0x7777777777777777ULL);
  int x = -77;
  EXPECT_BAD(obcclCommCount(nullptr, &x), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclCommUserRank(nullptr, &x), obcclInvalidArgument, nullptr, "comm");
  obcclResult_t e = obcclNumResults;
  EXPECT_BAD(obcclCommGetAsyncError(nullptr, &e), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclCommGetStats(nullptr, &st), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclCommDestroy(nullptr), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclCommAbort(nullptr), obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclBarrier(nullptr), obcclInvalidArgument, nullptr, "comm");
  EXPECT_EQ(x, -77);
  EXPECT_EQ(e, obcclNumResults);
  ASSERT_EQ(obcclCommCount(c, &x), obcclSuccess);
  EXPECT_EQ(x, 2);
  ASSERT_EQ(obcclCommUserRank(world_[1], &x), obcclSuccess);
  EXPECT_EQ(x, 1);
  ASSERT_EQ(obcclCommGetAsyncError(c, &e), obcclSuccess);
  EXPECT_EQ(e, obcclSuccess);
  expectStillWorks();
}

TEST_F(ApiArgsOnWorld, CollectivesRejectBadArgumentsOnOneRank) {
  obcclComm_t c = world_[0];
  float buf[16] = {0};
  const size_t huge = SIZE_MAX / 2;
  const auto badType = static_cast<obcclDataType_t>(99);
  const auto badOp = static_cast<obcclRedOp_t>(-1);
  EXPECT_BAD(obcclAllReduce(nullptr, buf, 4, obcclFloat32, obcclSum, c, nullptr),
             obcclInvalidArgument, c, "sendbuff");
  EXPECT_BAD(obcclAllReduce(buf, nullptr, 4, obcclFloat32, obcclSum, c, nullptr),
             obcclInvalidArgument, c, "recvbuff");
  EXPECT_BAD(obcclAllReduce(buf, buf, 4, badType, obcclSum, c, nullptr), obcclInvalidArgument, c,
             "datatype");
  EXPECT_BAD(obcclAllReduce(buf, buf, 4, obcclFloat32, badOp, c, nullptr), obcclInvalidArgument, c,
             "op");
  EXPECT_BAD(obcclAllReduce(buf, buf, 4, obcclInt32, obcclAvg, c, nullptr), obcclInvalidArgument, c,
             "op");
  EXPECT_BAD(obcclAllReduce(buf, buf, huge, obcclFloat64, obcclSum, c, nullptr),
             obcclInvalidArgument, c, "count");
  EXPECT_BAD(obcclAllReduce(buf, buf, 4, obcclFloat32, obcclSum, nullptr, nullptr),
             obcclInvalidArgument, nullptr, "comm");
  EXPECT_BAD(obcclBroadcast(buf, buf, 4, obcclFloat32, -1, c, nullptr), obcclInvalidArgument, c,
             "root");
  EXPECT_BAD(obcclBroadcast(buf, buf, 4, obcclFloat32, 2, c, nullptr), obcclInvalidArgument, c,
             "root");
  EXPECT_BAD(obcclBroadcast(nullptr, buf, 4, obcclFloat32, 0, c, nullptr), obcclInvalidArgument, c,
             "sendbuff");
  EXPECT_BAD(obcclBroadcast(buf, nullptr, 4, obcclFloat32, 0, c, nullptr), obcclInvalidArgument, c,
             "recvbuff");
  EXPECT_BAD(obcclBroadcast(buf, buf, 4, badType, 0, c, nullptr), obcclInvalidArgument, c,
             "datatype");
  EXPECT_BAD(obcclAllGather(buf, buf, huge, obcclUint8, c, nullptr), obcclInvalidArgument, c,
             "sendcount");
  EXPECT_BAD(obcclAllGather(nullptr, buf, 4, obcclUint8, c, nullptr), obcclInvalidArgument, c,
             "sendbuff");
  EXPECT_BAD(obcclAllGather(buf, buf, 4, badType, c, nullptr), obcclInvalidArgument, c, "datatype");
  EXPECT_BAD(obcclReduceScatter(buf, buf, huge, obcclUint8, obcclSum, c, nullptr),
             obcclInvalidArgument, c, "recvcount");
  EXPECT_BAD(obcclReduceScatter(buf, buf, 4, obcclUint8, obcclNumOps, c, nullptr),
             obcclInvalidArgument, c, "op");
  EXPECT_BAD(obcclReduceScatter(buf, nullptr, 4, obcclFloat32, obcclSum, c, nullptr),
             obcclInvalidArgument, c, "recvbuff");
  EXPECT_BAD(obcclAlltoAll(buf, buf, huge, obcclUint8, c, nullptr), obcclInvalidArgument, c,
             "count");
  EXPECT_BAD(obcclAlltoAll(buf, nullptr, 4, obcclUint8, c, nullptr), obcclInvalidArgument, c,
             "recvbuff");
  EXPECT_BAD(obcclAlltoAll(buf, buf, 4, badType, c, nullptr), obcclInvalidArgument, c, "datatype");
  for (float f : buf) EXPECT_EQ(f, 0.f);
  // Count 0 with NULL buffers is a valid no-op; it still validates the other arguments.
  EXPECT_EQ(obcclAllReduce(nullptr, nullptr, 0, obcclFloat32, obcclSum, c, nullptr), obcclSuccess);
  EXPECT_BAD(obcclAllReduce(nullptr, nullptr, 0, badType, obcclSum, c, nullptr),
             obcclInvalidArgument, c, "datatype");
  expectStillWorks();
}

TEST_F(ApiArgsOnWorld, DestroyedHandleIsNotUsedAfterwards) {
  // A second World shows that destroying one job's handles leaves the other alone.
  World other = makeWorld(1, "tcp");
  ASSERT_TRUE(other.ok()) << other.error;
  other.destroy();
  expectStillWorks();
}

}  // namespace
}  // namespace obccl_test
