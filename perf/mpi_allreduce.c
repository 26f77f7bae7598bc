/* mpi_allreduce: MPI_Allreduce measured with obccl_perf's flags, data and columns, so the two
 * outputs can be compared row by row (perf/foundation_vs_mpi.sh).
 *   mpirun -np 2 ./mpi_allreduce -b 1K -e 256M -f 2 -n 20 -w 5 -c 1 [-d float|double|int32]
 * Wire bytes are not known to MPI, so those columns print "-". */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  size_t minBytes, maxBytes;
  double factor;
  int iters, warmup, check;
  const char* type;
  const char* csv;
} Args;

static size_t parseBytes(const char* s) {
  char* end = NULL;
  double v = strtod(s, &end);
  if (*end == 'K' || *end == 'k') v *= 1024.0;
  if (*end == 'M' || *end == 'm') v *= 1024.0 * 1024;
  if (*end == 'G' || *end == 'g') v *= 1024.0 * 1024 * 1024;
  return (size_t)v;
}

static int parseArgs(int argc, char** argv, Args* a) {
  a->minBytes = a->maxBytes = 32u << 20;
  a->factor = 2;
  a->iters = 20;
  a->warmup = 5;
  a->check = 1;
  a->type = "float";
  a->csv = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char* f = argv[i];
    const char* v = argv[i + 1];
    if (!strcmp(f, "-b"))
      a->minBytes = parseBytes(v);
    else if (!strcmp(f, "-e"))
      a->maxBytes = parseBytes(v);
    else if (!strcmp(f, "-f"))
      a->factor = atof(v);
    else if (!strcmp(f, "-n"))
      a->iters = atoi(v);
    else if (!strcmp(f, "-w"))
      a->warmup = atoi(v);
    else if (!strcmp(f, "-c"))
      a->check = atoi(v);
    else if (!strcmp(f, "-d"))
      a->type = v;
    else if (!strcmp(f, "-j"))
      a->csv = v;
    else
      return 0;
  }
  if (argc % 2 == 0 || a->factor <= 1 || a->iters < 1 || a->warmup < 0) return 0;
  return !strcmp(a->type, "float") || !strcmp(a->type, "double") || !strcmp(a->type, "int32");
}

/* obccl_perf's input for a sum: small integers, so every partial sum is exact. */
static double inputValue(int rank, unsigned long long i) {
  return (double)(((unsigned long long)rank * 7 + i * 13) % 17) - 8;
}

static void store(const char* type, void* buf, size_t i, double v) {
  if (type[0] == 'f')
    ((float*)buf)[i] = (float)v;
  else if (type[0] == 'd')
    ((double*)buf)[i] = v;
  else
    ((int*)buf)[i] = (int)v;
}

static double load(const char* type, const void* buf, size_t i) {
  if (type[0] == 'f') return ((const float*)buf)[i];
  if (type[0] == 'd') return ((const double*)buf)[i];
  return ((const int*)buf)[i];
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  Args a;
  if (!parseArgs(argc, argv, &a)) {
    if (rank == 0)
      fprintf(stderr,
              "usage: mpi_allreduce [-b BYTES] [-e BYTES] [-f FACTOR] [-n ITERS] "
              "[-w ITERS] [-c 0|1] [-d float|double|int32] [-j CSV]\n");
    MPI_Finalize();
    return 2;
  }
  MPI_Datatype dt = a.type[0] == 'f' ? MPI_FLOAT : a.type[0] == 'd' ? MPI_DOUBLE : MPI_INT;
  size_t ts = a.type[0] == 'd' ? 8 : 4;
  size_t maxCount = a.maxBytes / ts > 0 ? a.maxBytes / ts : 1;
  char* send = calloc(maxCount, ts);
  char* recv = calloc(maxCount, ts);
  FILE* csv = (rank == 0 && a.csv) ? fopen(a.csv, "w") : NULL;
  if (!send || !recv) MPI_Abort(MPI_COMM_WORLD, 1);
  if (rank == 0) {
    printf("# mpi_allreduce: MPI_Allreduce, %d ranks, %s, iters %d, warmup %d, check %d\n", n,
           a.type, a.iters, a.warmup, a.check);
    printf("#%11s %12s %9s %6s %5s %11s %8s %8s %7s %13s %9s\n", "size", "count", "type", "redop",
           "root", "time", "algbw", "busbw", "#wrong", "wire", "fp32/wire");
  }
  if (csv)
    fprintf(csv,
            "collective,size,count,type,redop,root,nranks,time_us,algbw_GBps,busbw_GBps,"
            "wrong,wire_bytes_per_rank,fp32_over_wire\n");
  unsigned long long wrongTotal = 0;
  for (double b = (double)a.minBytes; b <= (double)a.maxBytes * 1.000001; b *= a.factor) {
    size_t count = (size_t)b / ts;
    unsigned long long wrong = 0, wrongAll = 0;
    if (a.check) {
      for (size_t i = 0; i < count; ++i) store(a.type, send, i, inputValue(rank, i));
      MPI_Allreduce(send, recv, (int)count, dt, MPI_SUM, MPI_COMM_WORLD);
      for (size_t i = 0; i < count; ++i) {
        double want = 0;
        for (int r = 0; r < n; ++r) want += inputValue(r, i);
        if (load(a.type, recv, i) != want) ++wrong;
      }
    }
    for (int i = 0; i < a.warmup; ++i)
      MPI_Allreduce(send, recv, (int)count, dt, MPI_SUM, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < a.iters; ++i)
      MPI_Allreduce(send, recv, (int)count, dt, MPI_SUM, MPI_COMM_WORLD);
    double us = (MPI_Wtime() - t0) * 1e6 / a.iters, usMax = 0;
    MPI_Allreduce(&us, &usMax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&wrong, &wrongAll, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    wrongTotal += wrongAll;
    if (rank == 0) {
      double algbw = usMax > 0 ? (double)(count * ts) / usMax / 1e3 : 0;
      double busbw = algbw * 2.0 * (n - 1) / n;
      char wrongText[32] = "N/A";
      if (a.check) snprintf(wrongText, sizeof(wrongText), "%llu", wrongAll);
      printf("%12zu %12zu %9s %6s %5d %11.1f %8.3f %8.3f %7s %13s %9s\n", count * ts, count, a.type,
             "sum", -1, usMax, algbw, busbw, wrongText, "-", "-");
      fflush(stdout);
      if (csv)
        fprintf(csv, "mpi_allreduce,%zu,%zu,%s,sum,-1,%d,%.3f,%.4f,%.4f,%s,-,-\n", count * ts,
                count, a.type, n, usMax, algbw, busbw, wrongText);
    }
  }
  if (rank == 0)
    printf("# Out of bounds values : %llu %s\n", wrongTotal, wrongTotal ? "FAILED" : "OK");
  if (csv) fclose(csv);
  free(send);
  free(recv);
  MPI_Finalize();
  return wrongTotal ? 1 : 0;
}
