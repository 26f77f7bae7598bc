// obccl_perf: collective bandwidth in the style of nccl-tests, through the public C API only.
// Start it with obcclrun, mpirun or srun; it reads its rank, size, root and secret from the
// environment (obcclCommInitFromEnv). Rank 0 prints one row per size:
//   size  count  type  redop  root  time(us)  algbw  busbw  #wrong  wire(B/rank)  fp32/wire
// algbw = size / time; busbw = algbw * nccl-tests' factor for the collective; #wrong counts
// elements that differ from a locally computed result (-c 1); wire is what each rank handed to
// its transports per call (obcclCommGetStats), and fp32/wire compares it with an fp32 ring
// allreduce of the same count, 2(n-1)/n * 4 * count bytes.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "obccl/obccl.h"
#include "perf/obccl_perf_data.h"

namespace obccl::perf {
namespace {

struct Args {
  size_t minBytes = 32u << 20, maxBytes = 32u << 20;
  double stepFactor = 2;
  int iters = 20, warmup = 5;
  bool check = true;
  obcclDataType_t type = obcclFloat32;
  obcclRedOp_t op = obcclSum;
  Coll coll = Coll::kAllReduce;
  int root = 0;
  std::string csvPath;
};

const char kUsage[] =
    "usage: obccl_perf [options]   (start with obcclrun -n N, mpirun or srun)\n"
    "  -b BYTES   smallest size (K, M, G suffixes; default 32M)\n"
    "  -e BYTES   largest size (default 32M)\n"
    "  -f FACTOR  size multiplier between rows (default 2)\n"
    "  -n ITERS   timed iterations per size (default 20)\n"
    "  -w ITERS   warmup iterations per size (default 5)\n"
    "  -c 0|1     check results against a locally computed expectation (default 1)\n"
    "  -d TYPE    float, half, bfloat16, double, int32, int64, uint8 (default float)\n"
    "  -o OP      sum, prod, max, min, avg (default sum)\n"
    "  -t COLL    allreduce, allgather, reducescatter, alltoall, broadcast,\n"
    "             compressed_allreduce (default allreduce)\n"
    "  -r ROOT    root rank of broadcast (default 0)\n"
    "  -j PATH    also write the rows as CSV to PATH\n";

[[noreturn]] void usageError(const std::string& msg) {
  std::fprintf(stderr, "obccl_perf: %s\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

size_t parseBytes(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  double mult = 1;
  std::string suffix = end ? end : "";
  if (suffix == "K" || suffix == "k" || suffix == "KiB") mult = 1024;
  if (suffix == "M" || suffix == "m" || suffix == "MiB") mult = 1024.0 * 1024;
  if (suffix == "G" || suffix == "g" || suffix == "GiB") mult = 1024.0 * 1024 * 1024;
  if (s.empty() || end == s.c_str() || v < 0 || (mult == 1 && !suffix.empty()))
    usageError("'" + s + "' is not a size in bytes");
  return static_cast<size_t>(v * mult);
}

int parseInt(const std::string& s, const char* what, int min) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < min || v > (1 << 30))
    usageError(std::string(what) + ": '" + s + "' is not an integer >= " + std::to_string(min));
  return static_cast<int>(v);
}

Args parseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (f.size() != 2 || f[0] != '-' || i + 1 >= argc) usageError("bad argument '" + f + "'");
    std::string v = argv[++i];
    switch (f[1]) {
      case 'b':
        a.minBytes = parseBytes(v);
        break;
      case 'e':
        a.maxBytes = parseBytes(v);
        break;
      case 'f':
        a.stepFactor = std::strtod(v.c_str(), nullptr);
        if (!(a.stepFactor > 1)) usageError("-f must be greater than 1");
        break;
      case 'n':
        a.iters = parseInt(v, "-n", 1);
        break;
      case 'w':
        a.warmup = parseInt(v, "-w", 0);
        break;
      case 'c':
        a.check = parseInt(v, "-c", 0) != 0;
        break;
      case 'r':
        a.root = parseInt(v, "-r", 0);
        break;
      case 'j':
        a.csvPath = v;
        break;
      case 'd':
        if (!parseType(v, &a.type)) usageError("unknown datatype '" + v + "'");
        break;
      case 'o':
        if (!parseOp(v, &a.op)) usageError("unknown reduction '" + v + "'");
        break;
      case 't':
        if (!parseColl(v, &a.coll)) usageError("unknown collective '" + v + "'");
        break;
      default:
        usageError("unknown option '" + f + "'");
    }
  }
  if (a.maxBytes < a.minBytes) usageError("-e is smaller than -b");
  if (a.op == obcclAvg && !isFloat(a.type)) usageError("-o avg needs a floating-point datatype");
  if (a.coll == Coll::kCompressed && a.type != obcclFloat32 && a.type != obcclFloat16 &&
      a.type != obcclBfloat16)
    usageError("compressed_allreduce takes float, half or bfloat16");
  return a;
}

// The compressed allreduce is looked up at run time, so obccl_perf builds and runs the other
// collectives against a library that does not have it yet.
struct Compressed {
  using Counts = obcclResult_t (*)(size_t, obcclComm_t, size_t*, size_t*);
  using Run = obcclResult_t (*)(const void*, void*, size_t, obcclDataType_t, float*, float*,
                                obcclComm_t, obcclStream_t);
  Counts counts =
      reinterpret_cast<Counts>(dlsym(RTLD_DEFAULT, "obcclCompressedAllReduceErrorCounts"));
  Run run = reinterpret_cast<Run>(dlsym(RTLD_DEFAULT, "obcclCompressedAllReduce"));
};

class Bench {
 public:
  Bench(const Args& a, obcclComm_t comm, int rank, int nranks)
      : a_(a), comm_(comm), rank_(rank), n_(nranks) {}
  int run();

 private:
  void check(obcclResult_t r, const char* what);
  void call();
  void measure(size_t bytes);
  double maxOverRanks(double v);
  double sumOverRanks(double v);

  Args a_;
  obcclComm_t comm_;
  int rank_, n_;
  Compressed compressed_;
  Shape shape_;
  std::vector<unsigned char> send_, recv_;
  std::vector<float> workerErr_, serverErr_;
  FILE* csv_ = nullptr;
  double busSum_ = 0;
  int rows_ = 0;
  uint64_t wrongTotal_ = 0;
};

void Bench::check(obcclResult_t r, const char* what) {
  if (r == obcclSuccess) return;
  const char* last = obcclGetLastError(comm_);
  std::fprintf(stderr, "obccl_perf: rank %d: %s failed: %s: %s\n", rank_, what,
               obcclGetErrorString(r), last ? last : "");
  obcclCommAbort(comm_);
  std::exit(1);
}

void Bench::call() {
  const void* s = send_.data();
  void* r = recv_.data();
  const size_t c = shape_.apiCount;
  switch (a_.coll) {
    case Coll::kAllReduce:
      return check(obcclAllReduce(s, r, c, a_.type, a_.op, comm_, nullptr), "obcclAllReduce");
    case Coll::kAllGather:
      return check(obcclAllGather(s, r, c, a_.type, comm_, nullptr), "obcclAllGather");
    case Coll::kReduceScatter:
      return check(obcclReduceScatter(s, r, c, a_.type, a_.op, comm_, nullptr),
                   "obcclReduceScatter");
    case Coll::kAllToAll:
      return check(obcclAlltoAll(s, r, c, a_.type, comm_, nullptr), "obcclAlltoAll");
    case Coll::kBroadcast:
      return check(obcclBroadcast(s, r, c, a_.type, a_.root, comm_, nullptr), "obcclBroadcast");
    case Coll::kCompressed:
      return check(
          compressed_.run(s, r, c, a_.type, workerErr_.data(), serverErr_.data(), comm_, nullptr),
          "obcclCompressedAllReduce");
  }
}

double Bench::maxOverRanks(double v) {
  double out = 0;
  check(obcclAllReduce(&v, &out, 1, obcclFloat64, obcclMax, comm_, nullptr), "obcclAllReduce(max)");
  return out;
}

double Bench::sumOverRanks(double v) {
  double out = 0;
  check(obcclAllReduce(&v, &out, 1, obcclFloat64, obcclSum, comm_, nullptr), "obcclAllReduce(sum)");
  return out;
}

void Bench::measure(size_t bytes) {
  shape_ = shapeFor(a_.coll, bytes, a_.type, n_);
  const bool compressed = a_.coll == Coll::kCompressed;
  if (compressed) {
    size_t we = 0, se = 0;
    check(compressed_.counts(shape_.count, comm_, &we, &se), "obcclCompressedAllReduceErrorCounts");
    workerErr_.assign(we, 0.0f);
    serverErr_.assign(se, 0.0f);
  }
  uint64_t wrong = 0;
  if (a_.check) {
    if (compressed)
      fillCompressedInput(shape_, a_.type, rank_, send_.data());
    else
      fillInputs(a_.coll, shape_, a_.type, a_.op, rank_, a_.root, send_.data(), recv_.data());
    call();
    wrong = compressed
                ? countWrongCompressed(shape_, a_.type, n_, recv_.data())
                : countWrong(a_.coll, shape_, a_.type, a_.op, rank_, n_, a_.root, recv_.data());
  }
  for (int i = 0; i < a_.warmup; ++i) call();
  check(obcclBarrier(comm_), "obcclBarrier");
  obcclCommStats_t before{sizeof(obcclCommStats_t), 0, 0, 0}, after = before;
  check(obcclCommGetStats(comm_, &before), "obcclCommGetStats");
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < a_.iters; ++i) call();
  auto t1 = std::chrono::steady_clock::now();
  check(obcclCommGetStats(comm_, &after), "obcclCommGetStats");

  double us = std::chrono::duration<double, std::micro>(t1 - t0).count() / a_.iters;
  us = maxOverRanks(us);
  double wire = sumOverRanks(double(after.bytesSent - before.bytesSent) / a_.iters) / n_;
  uint64_t wrongAll = static_cast<uint64_t>(sumOverRanks(static_cast<double>(wrong)));
  wrongTotal_ += wrongAll;
  if (rank_ != 0) return;
  const double algbw = us > 0 ? shape_.bytes / us / 1e3 : 0;  // bytes/us = MB/s; /1e3: GB/s
  const double busbw = algbw * busFactor(a_.coll, n_);
  busSum_ += busbw;
  ++rows_;
  const double fp32Ring = 2.0 * (n_ - 1) / n_ * 4.0 * shape_.count;
  const bool ratioShown = (a_.coll == Coll::kAllReduce || compressed) && wire > 0 && fp32Ring > 0;
  char ratio[32] = "-";
  if (ratioShown) std::snprintf(ratio, sizeof(ratio), "%.2f", fp32Ring / wire);
  const char* op = compressed ? "avg"
                   : (a_.coll == Coll::kAllReduce || a_.coll == Coll::kReduceScatter)
                       ? opName(a_.op)
                       : "none";
  int root = a_.coll == Coll::kBroadcast ? a_.root : -1;
  std::string wrongText = a_.check ? std::to_string(wrongAll) : "N/A";
  std::printf("%12zu %12zu %9s %6s %5d %11.1f %8.3f %8.3f %7s %13.0f %9s\n", shape_.bytes,
              shape_.count, typeName(a_.type), op, root, us, algbw, busbw, wrongText.c_str(), wire,
              ratio);
  std::fflush(stdout);
  if (csv_)
    std::fprintf(csv_, "%s,%zu,%zu,%s,%s,%d,%d,%.3f,%.4f,%.4f,%s,%.0f,%s\n", collName(a_.coll),
                 shape_.bytes, shape_.count, typeName(a_.type), op, root, n_, us, algbw, busbw,
                 wrongText.c_str(), wire, ratio);
}

int Bench::run() {
  if (a_.coll == Coll::kCompressed && (!compressed_.run || !compressed_.counts)) {
    std::fprintf(stderr, "obccl_perf: this libobccl has no obcclCompressedAllReduce\n");
    return 1;
  }
  if (a_.root >= n_)
    usageError("-r " + std::to_string(a_.root) + " is not a rank (" + std::to_string(n_) +
               " ranks)");
  Shape big = shapeFor(a_.coll, a_.maxBytes, a_.type, n_);
  send_.assign(std::max<size_t>(big.sendElems, 1) * typeSize(a_.type), 0);
  recv_.assign(std::max<size_t>(big.recvElems, 1) * typeSize(a_.type), 0);
  if (rank_ == 0) {
    std::printf("# obccl_perf: %s, %d ranks, %s, iters %d, warmup %d, check %d\n",
                collName(a_.coll), n_, typeName(a_.type), a_.iters, a_.warmup, a_.check);
    std::printf("#%11s %12s %9s %6s %5s %11s %8s %8s %7s %13s %9s\n", "size", "count", "type",
                "redop", "root", "time", "algbw", "busbw", "#wrong", "wire", "fp32/wire");
    std::printf("#%11s %12s %9s %6s %5s %11s %8s %8s %7s %13s %9s\n", "(B)", "(elements)", "", "",
                "", "(us)", "(GB/s)", "(GB/s)", "", "(B/rank)", "");
    if (!a_.csvPath.empty()) {
      csv_ = std::fopen(a_.csvPath.c_str(), "w");
      if (!csv_) std::perror(("obccl_perf: " + a_.csvPath).c_str());
      if (csv_)
        std::fprintf(csv_,
                     "collective,size,count,type,redop,root,nranks,time_us,algbw_GBps,"
                     "busbw_GBps,wrong,wire_bytes_per_rank,fp32_over_wire\n");
    }
  }
  for (double b = static_cast<double>(a_.minBytes);
       b <= static_cast<double>(a_.maxBytes) * 1.000001; b = std::max(b * a_.stepFactor, b + 1))
    measure(static_cast<size_t>(b));
  if (rank_ == 0) {
    std::printf("# Out of bounds values : %llu %s\n", static_cast<unsigned long long>(wrongTotal_),
                wrongTotal_ ? "FAILED" : "OK");
    std::printf("# Avg bus bandwidth    : %.3f GB/s\n", rows_ ? busSum_ / rows_ : 0.0);
  }
  if (csv_) std::fclose(csv_);
  return wrongTotal_ ? 1 : 0;
}

}  // namespace
}  // namespace obccl::perf

int main(int argc, char** argv) {
  using namespace obccl::perf;
  Args args = parseArgs(argc, argv);
  obcclComm_t comm = nullptr;
  obcclResult_t r = obcclCommInitFromEnv(&comm, nullptr);
  if (r != obcclSuccess) {
    const char* last = obcclGetLastError(nullptr);
    std::fprintf(stderr, "obccl_perf: obcclCommInitFromEnv failed: %s: %s\n",
                 obcclGetErrorString(r), last ? last : "");
    return 1;
  }
  int rank = 0, nranks = 1;
  obcclCommUserRank(comm, &rank);
  obcclCommCount(comm, &nranks);
  int status = Bench(args, comm, rank, nranks).run();
  obcclCommDestroy(comm);
  return status;
}
