/* Calls every function of obccl.h from C99 (the compressed allreduce also has its own tests) on a
   one-rank communicator, and checks results, codes and messages. Exit status 0 on success. */
#define _POSIX_C_SOURCE 200112L

#include <obccl/obccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

#define CHECK_OK(call)                                                                         \
  do {                                                                                         \
    obcclResult_t rc_ = (call);                                                                \
    if (rc_ != obcclSuccess) {                                                                 \
      fprintf(stderr, "%s:%d: %s returned %d (%s): %s\n", __FILE__, __LINE__, #call, (int)rc_, \
              obcclGetErrorString(rc_), obcclGetLastError(NULL));                              \
      ++failures;                                                                              \
    }                                                                                          \
  } while (0)

static void collectives(obcclComm_t comm) {
  float send[8], recv[8];
  int i;
  for (i = 0; i < 8; ++i) send[i] = (float)i;
  memset(recv, 0, sizeof(recv));
  CHECK_OK(obcclAllReduce(send, recv, 8, obcclFloat32, obcclSum, comm, NULL));
  CHECK(recv[7] == 7.0f);
  memset(recv, 0, sizeof(recv));
  CHECK_OK(obcclBroadcast(send, recv, 8, obcclFloat32, 0, comm, NULL));
  CHECK(recv[3] == 3.0f);
  memset(recv, 0, sizeof(recv));
  CHECK_OK(obcclAllGather(send, recv, 8, obcclFloat32, comm, NULL));
  CHECK(recv[5] == 5.0f);
  memset(recv, 0, sizeof(recv));
  CHECK_OK(obcclReduceScatter(send, recv, 8, obcclFloat32, obcclMax, comm, NULL));
  CHECK(recv[6] == 6.0f);
  memset(recv, 0, sizeof(recv));
  CHECK_OK(obcclAlltoAll(send, recv, 8, obcclFloat32, comm, NULL));
  CHECK(recv[1] == 1.0f);
  CHECK_OK(obcclBarrier(comm));
}

static void queries(obcclComm_t comm) {
  int count = -1, rank = -1;
  obcclResult_t async = obcclNumResults;
  obcclCommStats_t stats;
  CHECK_OK(obcclCommCount(comm, &count));
  CHECK(count == 1);
  CHECK_OK(obcclCommUserRank(comm, &rank));
  CHECK(rank == 0);
  CHECK_OK(obcclCommGetAsyncError(comm, &async));
  CHECK(async == obcclSuccess);
  memset(&stats, 0, sizeof(stats));
  stats.size = sizeof(stats);
  CHECK_OK(obcclCommGetStats(comm, &stats));
  CHECK(stats.collectives == 6);
  CHECK(stats.bytesSent == 0);
  /* Bad input: the code, and a message naming the argument. */
  CHECK(obcclCommCount(comm, NULL) == obcclInvalidArgument);
  CHECK(strstr(obcclGetLastError(comm), "count") != NULL);
  CHECK(obcclAllReduce(NULL, NULL, 4, obcclFloat32, obcclSum, comm, NULL) == obcclInvalidArgument);
  CHECK(strstr(obcclGetLastError(comm), "sendbuff") != NULL);
}

/* The compressed allreduce on one rank: 10 elements pad to 16, every output is +-the one scale. */
static void compressed(obcclComm_t comm) {
  float x[10], y[10], werr[16], serr[16];
  size_t nw = 0, ns = 0;
  int i;
  for (i = 0; i < 10; ++i) x[i] = i % 3 == 0 ? -1.0f : 2.0f;
  memset(werr, 0, sizeof(werr));
  memset(serr, 0, sizeof(serr));
  CHECK_OK(obcclCompressedAllReduceErrorCounts(10, comm, &nw, &ns));
  CHECK(nw == 16 && ns == 16);
  CHECK_OK(obcclCompressedAllReduce(x, y, 10, obcclFloat32, werr, serr, comm, NULL));
  CHECK(y[0] < 0.0f && y[1] > 0.0f && y[1] == -y[0] && y[9] == y[0]);
  CHECK(obcclCompressedAllReduce(x, y, 10, obcclInt32, werr, serr, comm, NULL) ==
        obcclInvalidArgument);
  CHECK(strstr(obcclGetLastError(comm), "datatype") != NULL);
  CHECK(obcclCompressedAllReduce(x, y, 10, obcclFloat32, NULL, serr, comm, NULL) ==
        obcclInvalidArgument);
  CHECK(strstr(obcclGetLastError(comm), "workerError") != NULL);
}

int main(void) {
  int version = 0, r;
  obcclUniqueId id;
  obcclComm_t comm = NULL, other = NULL, fromEnv = NULL;
  obcclConfig_t config = OBCCL_CONFIG_INITIALIZER;

  for (r = 0; r < (int)obcclNumResults; ++r) CHECK(obcclGetErrorString((obcclResult_t)r) != NULL);
  CHECK_OK(obcclGetVersion(&version));
  CHECK(version == OBCCL_VERSION_CODE);
  CHECK(obcclGetVersion(NULL) == obcclInvalidArgument);
  CHECK(strstr(obcclGetLastError(NULL), "version") != NULL);

  CHECK_OK(obcclGetUniqueId(&id));
  config.transports = "tcp";
  config.timeoutMs = 30000;
  CHECK_OK(obcclCommInitRankConfig(&comm, 1, id, 0, &config));
  if (comm != NULL) {
    collectives(comm);
    queries(comm);
    compressed(comm);
    CHECK_OK(obcclCommDestroy(comm));
  }

  CHECK_OK(obcclGetUniqueId(&id));
  CHECK_OK(obcclCommInitRank(&other, 1, id, 0));
  if (other != NULL) CHECK_OK(obcclCommAbort(other));

  /* A one-rank job from the environment, as obcclrun would describe it. */
  setenv("OBCCL_RANK", "0", 1);
  setenv("OBCCL_WORLD_SIZE", "1", 1);
  unsetenv("OBCCL_SECRET");
  unsetenv("OBCCL_ALLOW_UNAUTHENTICATED");
  setenv("OBCCL_ROOT", "127.0.0.1:1", 1);
  CHECK(obcclCommInitFromEnv(&fromEnv, NULL) == obcclInvalidArgument);
  CHECK(strstr(obcclGetLastError(NULL), "OBCCL_SECRET") != NULL);
  CHECK(fromEnv == NULL);

  if (failures == 0) printf("c_api: every function called, all checks passed\n");
  return failures == 0 ? 0 : 1;
}
