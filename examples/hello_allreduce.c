/* hello_allreduce: obccl's collectives on a few ranks, each result checked and explained.
 *
 *   obcclrun -n 4 ./hello_allreduce        (or mpirun / srun with OBCCL_SECRET exported)
 *
 * 1. allreduce: every rank contributes rank + 1; all get the sum n(n+1)/2.
 * 2. broadcast: rank 0 sends a "parameter vector"; every rank receives the same bytes.
 * 3. compressed allreduce: each rank holds a different "gradient" of 1M floats. One call sends
 *    one bit per element plus a scale instead of 32 bits, so the result is only a sign pattern
 *    times a scale; but with error feedback, what one call leaves out is carried into the next,
 *    so the running average of the outputs converges to the true mean. Rank 0 prints the
 *    bytes each rank sent and the error after 1, 4, 16 and 64 calls. */
#include <math.h>
#include <obccl/obccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                           \
  do {                                                                                        \
    obcclResult_t r_ = (call);                                                                \
    if (r_ != obcclSuccess) {                                                                 \
      const char* last_ = obcclGetLastError(comm);                                            \
      fprintf(stderr, "hello_allreduce: %s failed: %s: %s\n", #call, obcclGetErrorString(r_), \
              last_ ? last_ : "");                                                            \
      if (comm) obcclCommAbort(comm);                                                         \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

enum { kSmall = 8, kGrad = 1 << 20, kCalls = 64 };

static obcclComm_t comm = NULL;
static int rank = 0, nranks = 1;

static unsigned long long bytesSent(void) {
  obcclCommStats_t s;
  memset(&s, 0, sizeof(s));
  s.size = sizeof(s);
  CHECK(obcclCommGetStats(comm, &s));
  return s.bytesSent;
}

static int demoAllReduce(void) {
  float in[kSmall], out[kSmall];
  for (int i = 0; i < kSmall; ++i) in[i] = (float)(rank + 1);
  CHECK(obcclAllReduce(in, out, kSmall, obcclFloat32, obcclSum, comm, NULL));
  const float want = nranks * (nranks + 1) / 2.0f;
  int ok = 1;
  for (int i = 0; i < kSmall; ++i) ok &= out[i] == want;
  printf("allreduce: rank %d sent %g, got %g (expected %g): %s\n", rank, in[0], out[0], want,
         ok ? "ok" : "WRONG");
  return ok;
}

static int demoBroadcast(void) {
  int params[kSmall];
  for (int i = 0; i < kSmall; ++i) params[i] = rank == 0 ? 100 + i : -1;
  CHECK(obcclBroadcast(params, params, kSmall, obcclInt32, 0, comm, NULL));
  int ok = 1;
  for (int i = 0; i < kSmall; ++i) ok &= params[i] == 100 + i;
  printf("broadcast: rank %d received [%d %d ... %d] from rank 0: %s\n", rank, params[0], params[1],
         params[kSmall - 1], ok ? "ok" : "WRONG");
  return ok;
}

/* This rank's gradient: smooth, different on every rank. */
static float gradient(int r, size_t i) {
  return sinf(0.001f * (float)i * (float)(r + 1)) + 0.1f * r;
}

/* sqrt(mean((a - b)^2)) / sqrt(mean(b^2)) */
static double relativeError(const double* a, const double* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return sqrt(num / (den > 0 ? den : 1));
}

static int demoCompressed(void) {
  size_t nWorker = 0, nServer = 0;
  CHECK(obcclCompressedAllReduceErrorCounts(kGrad, comm, &nWorker, &nServer));
  float* x = malloc(kGrad * sizeof(float));
  float* y = malloc(kGrad * sizeof(float));
  float* werr = calloc(nWorker, sizeof(float));
  float* serr = calloc(nServer, sizeof(float));
  double* mean = calloc(kGrad, sizeof(double));
  double* avg = calloc(kGrad, sizeof(double));
  if (!x || !y || !werr || !serr || !mean || !avg) return 0;
  for (size_t i = 0; i < kGrad; ++i) {
    x[i] = gradient(rank, i);
    for (int r = 0; r < nranks; ++r) mean[i] += gradient(r, i) / nranks;
  }
  /* Wire bytes of one fp32 allreduce of the same gradient, for comparison. */
  unsigned long long before = bytesSent();
  CHECK(obcclAllReduce(x, y, kGrad, obcclFloat32, obcclSum, comm, NULL));
  unsigned long long fp32Bytes = bytesSent() - before;

  before = bytesSent();
  CHECK(obcclCompressedAllReduce(x, y, kGrad, obcclFloat32, werr, serr, comm, NULL));
  unsigned long long oneBitBytes = bytesSent() - before;
  if (rank == 0) {
    printf(
        "compressed allreduce of %d floats: this rank sent %llu bytes; an fp32 allreduce "
        "sent %llu (%.1fx more)\n",
        kGrad, oneBitBytes, fp32Bytes, oneBitBytes ? (double)fp32Bytes / oneBitBytes : 0.0);
  }
  double err1 = 0, errLast = 0;
  for (int t = 1; t <= kCalls; ++t) {
    if (t > 1) CHECK(obcclCompressedAllReduce(x, y, kGrad, obcclFloat32, werr, serr, comm, NULL));
    for (size_t i = 0; i < kGrad; ++i) avg[i] += (y[i] - avg[i]) / t;
    double e = relativeError(avg, mean, kGrad);
    if (t == 1) err1 = e;
    errLast = e;
    if (rank == 0 && (t == 1 || t == 4 || t == 16 || t == kCalls))
      printf("  after %2d calls: relative error of the average output vs the true mean: %.4f\n", t,
             e);
  }
  int ok = errLast < err1 / 4; /* error feedback: the error shrinks about as 1/T */
  if (rank == 0)
    printf("compressed allreduce: error feedback %s the error (%.4f -> %.4f)\n",
           ok ? "shrinks" : "does NOT shrink", err1, errLast);
  free(x), free(y), free(werr), free(serr), free(mean), free(avg);
  return ok;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines appear as they happen, also through a pipe */
  CHECK(obcclCommInitFromEnv(&comm, NULL));
  CHECK(obcclCommUserRank(comm, &rank));
  CHECK(obcclCommCount(comm, &nranks));
  if (rank == 0) printf("hello_allreduce: %d ranks\n", nranks);
  int ok = demoAllReduce();
  ok &= demoBroadcast();
  CHECK(obcclBarrier(comm));
  ok &= demoCompressed();
  CHECK(obcclCommDestroy(comm));
  if (rank == 0) printf("hello_allreduce: %s\n", ok ? "done" : "FAILED");
  return ok ? 0 : 1;
}
