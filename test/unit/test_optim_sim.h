// In-process stand-in for a communicator, for the optimizer helper's unit tests: ranks are
// threads, the allreduce average sums in rank order, and the compressed allreduce follows
// DESIGN.md section 4 with plain scalar code (the real one lives in core and codec).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/onebit_adam.h"

namespace obccl::optim::testing {

// Shared state of n simulated ranks. Every collective is a sequence of barrier-separated
// phases in which ranks publish pointers and read each other's published data.
class SimWorld {
 public:
  explicit SimWorld(int n) : slots_(n), floats_(n), flags_(n), n_(n) {}
  int size() const { return n_; }

  // Waits until every rank arrives; false after a 30 s deadline (the test then fails).
  bool barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    long long gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return true;
    }
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return generation_ != gen; });
  }

  std::vector<const float*> slots_;
  std::vector<float> floats_;
  std::vector<int> flags_;
  std::vector<std::vector<float>> server_;  // per rank: the signed server chunk

 private:
  int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  long long generation_ = 0;
};

inline float signOf(float x) { return x < 0 ? -1.0f : 1.0f; }

class SimReducer : public Reducer {
 public:
  SimReducer(std::shared_ptr<SimWorld> world, int rank) : w_(std::move(world)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return w_->size(); }
  int allReduceCalls = 0, compressedCalls = 0;

  Status allReduceAverage(float* data, size_t count) override {
    ++allReduceCalls;
    std::vector<float> mine(data, data + count);
    w_->slots_[rank_] = mine.data();
    if (!w_->barrier()) return timeoutError("sim barrier");
    for (size_t i = 0; i < count; ++i) {
      float s = 0;
      for (int r = 0; r < size(); ++r) s += w_->slots_[r][i];
      data[i] = s / static_cast<float>(size());
    }
    if (!w_->barrier()) return timeoutError("sim barrier");
    return Status::ok();
  }

  Status errorCounts(size_t count, size_t* worker, size_t* server) override {
    size_t unit = 8 * static_cast<size_t>(size());
    *worker = (count + unit - 1) / unit * unit;
    *server = *worker / size();
    return Status::ok();
  }

  Status compressedAllReduce(float* x, size_t count, float* e, float* s) override {
    ++compressedCalls;
    const int n = size();
    size_t np = 0, c = 0;
    OBCCL_TRY(errorCounts(count, &np, &c));
    // Worker step (on copies, so a failure leaves e unchanged).
    std::vector<float> u(np), eNew(np);
    bool finite = true;
    double sq = 0;
    for (size_t i = 0; i < np; ++i) {
      u[i] = (i < count ? x[i] : 0.0f) + e[i];
      finite = finite && std::isfinite(u[i]);
      sq += static_cast<double>(u[i]) * u[i];
    }
    for (size_t i = 0; i < c; ++i) finite = finite && std::isfinite(s[i]);
    w_->flags_[rank_] = finite ? 0 : 1;
    if (!w_->barrier()) return timeoutError("sim barrier");
    int badRank = -1;
    for (int r = 0; r < n; ++r)
      if (w_->flags_[r] && badRank < 0) badRank = r;
    if (!w_->barrier()) return timeoutError("sim barrier");
    if (badRank >= 0) return invalidArgument("rank " + std::to_string(badRank) + ": non-finite");
    float a = np ? static_cast<float>(std::sqrt(sq / np)) : 0.0f;
    for (size_t i = 0; i < np; ++i) eNew[i] = u[i] - a * signOf(u[i]);
    w_->slots_[rank_] = u.data();
    w_->floats_[rank_] = a;
    if (!w_->barrier()) return timeoutError("sim barrier");
    // Server step for this rank's chunk.
    std::vector<float> z(c);
    double zsq = 0;
    for (size_t k = 0; k < c; ++k) {
      float acc = 0;
      for (int r = 0; r < n; ++r) acc += w_->floats_[r] * signOf(w_->slots_[r][rank_ * c + k]);
      z[k] = acc / static_cast<float>(n) + s[k];
      zsq += static_cast<double>(z[k]) * z[k];
    }
    float b = c ? static_cast<float>(std::sqrt(zsq / c)) : 0.0f;
    if (!w_->barrier()) return timeoutError("sim barrier");
    std::vector<float> signedChunk(c);
    for (size_t k = 0; k < c; ++k) {
      signedChunk[k] = b * signOf(z[k]);
      s[k] = z[k] - signedChunk[k];
    }
    w_->slots_[rank_] = signedChunk.data();
    if (!w_->barrier()) return timeoutError("sim barrier");
    for (size_t i = 0; i < count; ++i) x[i] = w_->slots_[i / c][i % c];
    for (size_t i = 0; i < np; ++i) e[i] = eNew[i];
    if (!w_->barrier()) return timeoutError("sim barrier");
    return Status::ok();
  }

 private:
  std::shared_ptr<SimWorld> w_;
  int rank_;
};

// Runs body(rank, optimizer, reducer) on n threads, each with its own OnebitAdam over count
// elements; the optimizers live until every thread is done.
inline void runRanks(int n, size_t count, const Options& options,
                     const std::function<void(int, OnebitAdam&, SimReducer&)>& body) {
  auto world = std::make_shared<SimWorld>(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto reducer = std::make_unique<SimReducer>(world, r);
      SimReducer* raw = reducer.get();
      auto created = OnebitAdam::create(std::move(reducer), count, options);
      ASSERT_TRUE(created.isOk()) << created.status().message();
      body(r, *created.value(), *raw);
    });
  }
  for (auto& t : threads) t.join();
}

// A single-rank optimizer over the simulated world of one.
inline std::unique_ptr<OnebitAdam> makeSingle(size_t count, const Options& options) {
  auto created = OnebitAdam::create(std::make_unique<SimReducer>(std::make_shared<SimWorld>(1), 0),
                                    count, options);
  EXPECT_TRUE(created.isOk()) << created.status().message();
  return created.isOk() ? std::move(created).value() : nullptr;
}

}  // namespace obccl::optim::testing
