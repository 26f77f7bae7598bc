// Data-parallel training of a 784-256-10 MLP on Fashion-MNIST with obccl's 1-bit Adam helper.
//
//   obcclrun -n 4 ./train_fashion_mnist --mode onebit --epochs 10 --csv onebit.csv
//
// Every rank holds the whole model, takes a disjoint shard of every global batch, computes its
// local gradient and hands it to obcclOnebitAdamStep, which does all the communication:
//   adam         full-precision Adam on allreduced gradients for the whole run
//   onebit       1-bit Adam: full precision for the first --warmup fraction of the steps, then
//                1-bit compressed momentum with error feedback
//   onebit-noef  as onebit, with the error-feedback buffers zeroed before every step (ablation)
// Rank 0 prints one line per epoch, writes a CSV and, with --plot, a PNG made by gnuplot.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "data.h"
#include "mlp.h"
#include "obccl/obccl.h"
#include "obccl/onebit_adam.h"

namespace {

struct Args {
  std::string mode = "onebit";
  int epochs = 10;
  size_t batch = 128;  // global batch, split evenly over the ranks
  float lr = 1e-3f;
  double warmup = 0.15;      // fraction of all steps in full precision (onebit modes)
  long long freezeStep = 0;  // > 0 or -1 (auto) overrides --warmup
  std::string data = "/usr/share/datasets/fashion-mnist";
  size_t trainLimit = 0, testLimit = 0;
  uint32_t seed = 1;
  std::string csv, plot, rootFloor;
};

[[noreturn]] void usage(const char* prog, const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "%s: %s\n", prog, error.c_str());
  std::fprintf(stderr,
               "usage: obcclrun -n N %s [--mode adam|onebit|onebit-noef] [--epochs E]\n"
               "         [--batch GLOBAL_BATCH] [--lr LR] [--warmup FRACTION]\n"
               "         [--freeze-step N|auto] [--root-floor RHO] [--data DIR]\n"
               "         [--train-limit N] [--test-limit N] [--seed S] [--csv FILE]\n"
               "         [--plot FILE.png]\n",
               prog);
  std::exit(2);
}

Args parseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") usage(argv[0], "");
    if (i + 1 >= argc) usage(argv[0], k + " needs a value");
    std::string v = argv[++i];
    if (k == "--mode")
      a.mode = v;
    else if (k == "--epochs")
      a.epochs = std::atoi(v.c_str());
    else if (k == "--batch")
      a.batch = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "--lr")
      a.lr = std::strtof(v.c_str(), nullptr);
    else if (k == "--warmup")
      a.warmup = std::strtod(v.c_str(), nullptr);
    else if (k == "--freeze-step")
      a.freezeStep = v == "auto" ? OBCCL_FREEZE_AUTO : std::atoll(v.c_str());
    else if (k == "--root-floor")
      a.rootFloor = v;
    else if (k == "--data")
      a.data = v;
    else if (k == "--train-limit")
      a.trainLimit = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "--test-limit")
      a.testLimit = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "--seed")
      a.seed = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    else if (k == "--csv")
      a.csv = v;
    else if (k == "--plot")
      a.plot = v;
    else
      usage(argv[0], "unknown option " + k);
  }
  if (a.mode != "adam" && a.mode != "onebit" && a.mode != "onebit-noef")
    usage(argv[0], "--mode must be adam, onebit or onebit-noef");
  if (a.epochs < 1 || a.batch < 1 || !(a.warmup >= 0 && a.warmup <= 1))
    usage(argv[0], "--epochs and --batch must be positive, --warmup in [0, 1]");
  return a;
}

void check(obcclResult_t r, obcclComm_t comm, const char* what) {
  if (r == obcclSuccess) return;
  std::fprintf(stderr, "train_fashion_mnist: %s failed: %s (%s)\n", what, obcclGetErrorString(r),
               obcclGetLastError(comm));
  std::exit(1);
}

unsigned long long bytesSent(obcclComm_t comm) {
  obcclCommStats_t s;
  std::memset(&s, 0, sizeof(s));
  s.size = sizeof(s);
  check(obcclCommGetStats(comm, &s), comm, "obcclCommGetStats");
  return s.bytesSent;
}

// Draws accuracy against epoch and against bytes sent, from the CSV written below.
void plotCsv(const std::string& csv, const std::string& png, const std::string& mode) {
  std::string script = png + ".gp";
  FILE* f = std::fopen(script.c_str(), "w");
  if (f == nullptr) return;
  std::fprintf(f,
               "set terminal pngcairo size 1200,450\nset output '%s'\nset datafile separator ','\n"
               "set datafile columnheaders\nset key bottom right\nset grid\nset multiplot layout "
               "1,2 title 'Fashion-MNIST, "
               "MLP 784-256-10, %s'\n"
               "set xlabel 'epoch'\nset ylabel 'test accuracy (%%)'\n"
               "plot '%s' using 2:6 with linespoints title '%s'\n"
               "set xlabel 'MB sent per rank'\n"
               "plot '%s' using ($7/1e6):6 with linespoints title '%s'\n"
               "unset multiplot\n",
               png.c_str(), mode.c_str(), csv.c_str(), mode.c_str(), csv.c_str(), mode.c_str());
  std::fclose(f);
  std::string cmd = "gnuplot '" + script + "'";
  if (std::system(cmd.c_str()) != 0)
    std::fprintf(stderr, "train_fashion_mnist: gnuplot failed; the CSV is in %s\n", csv.c_str());
}

// One rank's training run: data, model, optimizer and the per-epoch report.
class Trainer {
 public:
  Trainer(const Args& a, obcclComm_t comm, int rank, int nranks)
      : a_(a), comm_(comm), rank_(rank), nranks_(nranks), model_(784, 256, 10) {}

  // Loads the data and creates the optimizer; false (with a message printed) on failure.
  bool setup() {
    std::string error;
    if (!fmnist::loadDataset(a_.data, "train", a_.trainLimit, &train_, &error) ||
        !fmnist::loadDataset(a_.data, "t10k", a_.testLimit, &test_, &error)) {
      std::fprintf(stderr, "train_fashion_mnist: %s\n", error.c_str());
      return false;
    }
    local_ = a_.batch / nranks_;
    stepsPerEpoch_ = static_cast<long long>(train_.count / a_.batch);
    if (stepsPerEpoch_ == 0 || train_.pixels != 784) {
      std::fprintf(stderr,
                   "train_fashion_mnist: fewer samples than one global batch, or not "
                   "28x28 images\n");
      return false;
    }
    model_.init(a_.seed);
    const long long totalSteps = stepsPerEpoch_ * a_.epochs;
    obcclOnebitAdamConfig_t cfg = OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER;
    cfg.lr = a_.lr;
    if (a_.mode == "adam")
      cfg.freezeStep = totalSteps + 1;  // never leaves the full-precision stage
    else if (a_.freezeStep != 0)
      cfg.freezeStep = a_.freezeStep;
    else
      cfg.freezeStep = std::max(1LL, std::llround(a_.warmup * totalSteps));
    check(obcclOnebitAdamCreate(comm_, model_.paramCount(), &cfg, &opt_), comm_,
          "obcclOnebitAdamCreate");
    if (rank_ == 0) {
      std::printf(
          "Fashion-MNIST MLP 784-256-10, %zu parameters, %d ranks, mode %s, global batch "
          "%zu, %lld steps/epoch, freeze step %lld\n",
          model_.paramCount(), nranks_, a_.mode.c_str(), a_.batch, stepsPerEpoch_,
          a_.mode == "adam" ? -1LL : static_cast<long long>(cfg.freezeStep));
      if (!a_.csv.empty() && (csv_ = std::fopen(a_.csv.c_str(), "w")) != nullptr)
        std::fprintf(csv_,
                     "mode,epoch,step,train_loss,test_loss,test_acc,bytes_sent,seconds,stage\n");
    }
    order_.resize(train_.count);
    std::iota(order_.begin(), order_.end(), 0);
    t0_ = std::chrono::steady_clock::now();
    return true;
  }

  // One pass over the training set; returns the summed per-step losses of this rank.
  double trainEpoch(int epoch) {
    const size_t px = train_.pixels;
    // Same seed on every rank: the same permutation, of which each rank takes its shard.
    std::mt19937 shuffle(a_.seed * 1000003u + epoch);
    std::shuffle(order_.begin(), order_.end(), shuffle);
    std::vector<float> x(local_ * px);
    std::vector<uint8_t> y(local_);
    double lossSum = 0;
    unsigned long long before = bytesSent(comm_);
    for (long long s = 0; s < stepsPerEpoch_; ++s) {
      for (size_t i = 0; i < local_; ++i) {
        size_t idx = order_[s * a_.batch + rank_ * local_ + i];
        std::memcpy(&x[i * px], &train_.images[idx * px], px * sizeof(float));
        y[i] = train_.labels[idx];
      }
      lossSum += model_.forwardBackward(x.data(), y.data(), local_);
      if (a_.mode == "onebit-noef")
        check(obcclOnebitAdamResetErrorFeedback(opt_), comm_, "obcclOnebitAdamResetErrorFeedback");
      check(obcclOnebitAdamStep(opt_, model_.params(), model_.grads(), -1.0f, nullptr), comm_,
            "obcclOnebitAdamStep");
    }
    trainBytes_ += bytesSent(comm_) - before;
    return lossSum;
  }

  // Scores the test set (each rank its share, one small allreduce) and reports on rank 0.
  void report(int epoch, double lossSum) {
    double sums[4] = {lossSum, 0, 0, 0};  // train loss, test loss, correct, test samples
    const size_t lo = test_.count * rank_ / nranks_, hi = test_.count * (rank_ + 1) / nranks_;
    for (size_t b = lo; b < hi; b += 500) {
      size_t n = std::min<size_t>(500, hi - b);
      model_.evaluate(&test_.images[b * test_.pixels], &test_.labels[b], n, &sums[1], &sums[2]);
    }
    sums[3] = static_cast<double>(hi - lo);
    check(obcclAllReduce(sums, sums, 4, obcclFloat64, obcclSum, comm_, nullptr), comm_,
          "obcclAllReduce");
    long long step = 0, skipped = 0;
    obcclOptimStage_t stage = obcclStageWarmup;
    check(obcclOnebitAdamGetInfo(opt_, &step, &stage, &skipped), comm_, "obcclOnebitAdamGetInfo");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    if (rank_ != 0) return;
    double trainLoss = sums[0] / (stepsPerEpoch_ * nranks_), testLoss = sums[1] / sums[3];
    double acc = 100.0 * sums[2] / sums[3];
    const char* st = stage == obcclStageCompressed ? "compressed" : "warmup";
    std::printf(
        "epoch %3d/%d  loss %.4f  test_loss %.4f  test_acc %6.2f%%  sent %9.3f MB  "
        "stage %-10s %6.1f s%s\n",
        epoch, a_.epochs, trainLoss, testLoss, acc, trainBytes_ / 1e6, st, secs,
        skipped ? "  (skipped steps!)" : "");
    std::fflush(stdout);
    if (csv_)
      std::fprintf(csv_, "%s,%d,%lld,%.6f,%.6f,%.4f,%llu,%.2f,%s\n", a_.mode.c_str(), epoch, step,
                   trainLoss, testLoss, acc, trainBytes_, secs, st);
  }

  void finish() {
    if (csv_) std::fclose(csv_);
    csv_ = nullptr;
    if (rank_ == 0 && !a_.plot.empty() && !a_.csv.empty()) plotCsv(a_.csv, a_.plot, a_.mode);
    if (opt_) check(obcclOnebitAdamDestroy(opt_), comm_, "obcclOnebitAdamDestroy");
    opt_ = nullptr;
  }

 private:
  const Args a_;
  obcclComm_t comm_;
  int rank_, nranks_;
  fmnist::Dataset train_, test_;
  fmnist::Mlp model_;
  obcclOnebitAdam_t opt_ = nullptr;
  FILE* csv_ = nullptr;
  size_t local_ = 0;
  long long stepsPerEpoch_ = 0;
  std::vector<size_t> order_;
  unsigned long long trainBytes_ = 0;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

int main(int argc, char** argv) {
  Args a = parseArgs(argc, argv);
  // Several ranks share the cores: one BLAS thread each unless the user says otherwise.
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr) openblas_set_num_threads(1);
  if (!a.rootFloor.empty()) setenv("OBCCL_ONEBIT_ROOT_FLOOR", a.rootFloor.c_str(), 1);

  obcclComm_t comm = nullptr;
  check(obcclCommInitFromEnv(&comm, nullptr), nullptr, "obcclCommInitFromEnv");
  int rank = 0, nranks = 1;
  check(obcclCommUserRank(comm, &rank), comm, "obcclCommUserRank");
  check(obcclCommCount(comm, &nranks), comm, "obcclCommCount");
  if (a.batch % nranks != 0) {
    if (rank == 0)
      std::fprintf(stderr, "--batch %zu is not a multiple of %d ranks\n", a.batch, nranks);
    return 2;
  }
  Trainer trainer(a, comm, rank, nranks);
  if (!trainer.setup()) return 1;
  for (int epoch = 1; epoch <= a.epochs; ++epoch) trainer.report(epoch, trainer.trainEpoch(epoch));
  trainer.finish();
  check(obcclCommDestroy(comm), nullptr, "obcclCommDestroy");
  return 0;
}
