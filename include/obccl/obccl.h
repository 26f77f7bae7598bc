/* obccl: One-Bit Collective Communication Library. Public C API (C99; no CUDA, no C++). */
#ifndef OBCCL_OBCCL_H_
#define OBCCL_OBCCL_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define OBCCL_API
#elif defined(OBCCL_BUILDING_LIBRARY)
#define OBCCL_API __attribute__((visibility("default")))
#else
#define OBCCL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define OBCCL_MAJOR 0
#define OBCCL_MINOR 1
#define OBCCL_PATCH 0
#define OBCCL_VERSION(X, Y, Z) ((X)*10000 + (Y)*100 + (Z))
#define OBCCL_VERSION_CODE OBCCL_VERSION(OBCCL_MAJOR, OBCCL_MINOR, OBCCL_PATCH)

typedef struct obcclComm* obcclComm_t;
#define OBCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[OBCCL_UNIQUE_ID_BYTES];
} obcclUniqueId;

typedef enum {
  obcclSuccess = 0,
  obcclUnhandledCudaError = 1,
  obcclSystemError = 2,
  obcclInternalError = 3,
  obcclInvalidArgument = 4,
  obcclInvalidUsage = 5,
  obcclRemoteError = 6,
  obcclInProgress = 7,
  obcclTimeout = 8,
  obcclNumResults /* new codes are appended, never renumbered */
} obcclResult_t;

typedef enum {
  obcclFloat32 = 0,
  obcclFloat16 = 1,
  obcclBfloat16 = 2,
  obcclFloat64 = 3,
  obcclInt32 = 4,
  obcclInt64 = 5,
  obcclUint8 = 6,
  obcclNumTypes
} obcclDataType_t;

typedef enum {
  obcclSum = 0,
  obcclProd = 1,
  obcclMax = 2,
  obcclMin = 3,
  obcclAvg = 4,
  obcclNumOps
} obcclRedOp_t;

/* A cudaStream_t for device buffers; NULL for host buffers. */
typedef void* obcclStream_t;

#define OBCCL_CONFIG_MAGIC 0x0bcc1c0fu
#define OBCCL_CONFIG_UNDEF_INT (-2147483647 - 1)
#define OBCCL_CONFIG_UNDEF_PTR NULL

typedef struct {
  size_t size;            /* sizeof(obcclConfig_t), set by the initializer */
  unsigned int magic;     /* OBCCL_CONFIG_MAGIC */
  unsigned int version;   /* OBCCL_VERSION_CODE of the caller's header */
  int blocking;           /* 1: calls block (default); 0: init may return obcclInProgress */
  int timeoutMs;          /* bootstrap and collective timeout; default 600000 */
  const char* transports; /* e.g. "shm,tcp"; NULL: default order shm, ucx, tcp */
  int compressBlock;      /* elements per scale block; 0: one scale per chunk (the paper) */
  int hierarchical;       /* -1 auto (default), 0 off, 1 on */
} obcclConfig_t;

/* Fields left at their "undefined" marker take the environment's value, then the default. */
#define OBCCL_CONFIG_INITIALIZER                                                           \
  {                                                                                        \
    sizeof(obcclConfig_t), OBCCL_CONFIG_MAGIC, OBCCL_VERSION_CODE, OBCCL_CONFIG_UNDEF_INT, \
        OBCCL_CONFIG_UNDEF_INT, OBCCL_CONFIG_UNDEF_PTR, OBCCL_CONFIG_UNDEF_INT,            \
        OBCCL_CONFIG_UNDEF_INT                                                             \
  }

typedef struct {
  size_t size;                  /* set by the caller to sizeof(obcclCommStats_t) */
  unsigned long long bytesSent; /* every byte this rank handed to a transport, headers too */
  unsigned long long bytesReceived;
  unsigned long long collectives; /* collective calls completed */
} obcclCommStats_t;

OBCCL_API const char* obcclGetErrorString(obcclResult_t result);
/* Per communicator; a NULL comm gives this thread's last error. */
OBCCL_API const char* obcclGetLastError(obcclComm_t comm);
OBCCL_API obcclResult_t obcclGetVersion(int* version);
OBCCL_API obcclResult_t obcclGetUniqueId(obcclUniqueId* uniqueId);
OBCCL_API obcclResult_t obcclCommInitRank(obcclComm_t* comm, int nranks, obcclUniqueId commId,
                                          int rank);
OBCCL_API obcclResult_t obcclCommInitRankConfig(obcclComm_t* comm, int nranks, obcclUniqueId commId,
                                                int rank, const obcclConfig_t* config);
OBCCL_API obcclResult_t obcclCommInitFromEnv(obcclComm_t* comm, const obcclConfig_t* config);
OBCCL_API obcclResult_t obcclCommDestroy(obcclComm_t comm);
/* Safe from any thread; returns quickly. */
OBCCL_API obcclResult_t obcclCommAbort(obcclComm_t comm);
OBCCL_API obcclResult_t obcclCommGetAsyncError(obcclComm_t comm, obcclResult_t* asyncError);
OBCCL_API obcclResult_t obcclCommCount(obcclComm_t comm, int* count);
OBCCL_API obcclResult_t obcclCommUserRank(obcclComm_t comm, int* rank);
OBCCL_API obcclResult_t obcclCommGetStats(obcclComm_t comm, obcclCommStats_t* stats);

OBCCL_API obcclResult_t obcclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                       obcclDataType_t datatype, obcclRedOp_t op, obcclComm_t comm,
                                       obcclStream_t stream);
OBCCL_API obcclResult_t obcclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                                       obcclDataType_t datatype, int root, obcclComm_t comm,
                                       obcclStream_t stream);
OBCCL_API obcclResult_t obcclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                                       obcclDataType_t datatype, obcclComm_t comm,
                                       obcclStream_t stream);
OBCCL_API obcclResult_t obcclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                           obcclDataType_t datatype, obcclRedOp_t op,
                                           obcclComm_t comm, obcclStream_t stream);
OBCCL_API obcclResult_t obcclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
                                      obcclDataType_t datatype, obcclComm_t comm,
                                      obcclStream_t stream);
OBCCL_API obcclResult_t obcclBarrier(obcclComm_t comm);

/* 1-bit compressed allreduce with error feedback. recvbuff receives the compressed AVERAGE over
   ranks; in place (sendbuff == recvbuff) is allowed. Error buffers are fp32, zeroed before the
   first call, sized by obcclCompressedAllReduceErrorCounts. */
OBCCL_API obcclResult_t obcclCompressedAllReduceErrorCounts(size_t count, obcclComm_t comm,
                                                            size_t* workerErrorCount,
                                                            size_t* serverErrorCount);
OBCCL_API obcclResult_t obcclCompressedAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                                 obcclDataType_t datatype, float* workerError,
                                                 float* serverError, obcclComm_t comm,
                                                 obcclStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* OBCCL_OBCCL_H_ */
