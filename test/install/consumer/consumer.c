/* Uses an installed obccl: the version, a one-rank communicator made from a unique id, and an
 * allreduce on it. Exits 0 and prints "consumer: ok" when everything matches. */
#include <obccl/obccl.h>
#include <stdio.h>

static int fail(const char* what, obcclResult_t r, obcclComm_t comm) {
  const char* last = obcclGetLastError(comm);
  fprintf(stderr, "consumer: %s failed: %s: %s\n", what, obcclGetErrorString(r), last ? last : "");
  return 1;
}

int main(void) {
  int version = 0;
  obcclResult_t r = obcclGetVersion(&version);
  if (r != obcclSuccess) return fail("obcclGetVersion", r, NULL);
  if (version != OBCCL_VERSION_CODE) {
    fprintf(stderr, "consumer: library version %d, header %d\n", version, OBCCL_VERSION_CODE);
    return 1;
  }
  obcclUniqueId id;
  r = obcclGetUniqueId(&id);
  if (r != obcclSuccess) return fail("obcclGetUniqueId", r, NULL);
  obcclComm_t comm = NULL;
  r = obcclCommInitRank(&comm, 1, id, 0);
  if (r != obcclSuccess) return fail("obcclCommInitRank", r, NULL);
  float in[4] = {1.5f, -2.0f, 3.25f, 0.0f}, out[4] = {0, 0, 0, 0};
  r = obcclAllReduce(in, out, 4, obcclFloat32, obcclSum, comm, NULL);
  if (r != obcclSuccess) return fail("obcclAllReduce", r, comm);
  for (int i = 0; i < 4; ++i) {
    if (out[i] != in[i]) {
      fprintf(stderr, "consumer: element %d is %g, expected %g\n", i, out[i], in[i]);
      return 1;
    }
  }
  r = obcclCommDestroy(comm);
  if (r != obcclSuccess) return fail("obcclCommDestroy", r, NULL);
  printf("consumer: ok (obccl version code %d)\n", version);
  return 0;
}
