// The 1-bit Adam optimizer helper (DESIGN.md section 6, docs/ONEBIT_ADAM.md): a warmup stage of
// full-precision Adam on averaged gradients, then momentum averaged by the 1-bit compressed
// allreduce with the variance frozen. Communication goes through a Reducer, so the state machine
// and arithmetic can be tested without a communicator.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/onebit_adam_kernels.h"
#include "obccl/onebit_adam.h"
#include "util/status.h"

namespace obccl::core {
class Comm;
}  // namespace obccl::core

namespace obccl {
namespace optim {

// What the helper needs from a communicator. Results must be bitwise identical on all ranks.
class Reducer {
 public:
  virtual ~Reducer() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: data = average over ranks of data.
  virtual Status allReduceAverage(float* data, size_t count) = 0;
  // Element counts of the worker and server error buffers for `count` elements.
  virtual Status errorCounts(size_t count, size_t* worker, size_t* server) = 0;
  // In place: the 1-bit compressed average (DESIGN.md section 4). A non-finite value on any rank
  // must fail on every rank with obcclInvalidArgument and leave the error buffers unchanged.
  virtual Status compressedAllReduce(float* data, size_t count, float* workerError,
                                     float* serverError) = 0;
};

// The reducer over a communicator (onebit_adam_comm.cc). The communicator must outlive it.
std::unique_ptr<Reducer> makeCommReducer(core::Comm* comm);

// Auto-freeze criterion (docs/ONEBIT_ADAM.md): every `window` updates, S = sum(v); freeze once at
// least `minSteps` updates are done and |S - S_prev| <= tolerance * S, or at `maxSteps`.
struct AutoFreezeOptions {
  long long window = 0;  // 0: max(10, round(0.1 / (1 - beta2)))
  double tolerance = 0.01;
  long long minSteps = 0;  // 0: round(1 / (1 - beta2))
  long long maxSteps = 0;  // 0: round(5 / (1 - beta2))
};

struct Options {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weightDecay = 0.0f;
  long long freezeStep = OBCCL_FREEZE_AUTO;
  AutoFreezeOptions autoFreeze;
  // Compressed stage: sqrt(v) is floored at rootFloor * sqrt(mean v over unmasked coordinates).
  // 0 keeps the paper's exact arithmetic.
  double rootFloor = 0.0;
};

// Checks a public config and reads the tunables from the parameter registry
// (OBCCL_ONEBIT_ROOT_FLOOR, OBCCL_ONEBIT_FREEZE_*).
Result<Options> optionsFromConfig(const obcclOnebitAdamConfig_t* config);
// Checks hyper-parameters and tunables; resolves the automatic auto-freeze values.
Result<Options> validateOptions(Options options);

class OnebitAdam {
 public:
  static Result<std::unique_ptr<OnebitAdam>> create(std::unique_ptr<Reducer> reducer, size_t count,
                                                    const Options& options);

  // mask[i] in {0, 1}; replaces any mask (also the automatic one). Applied in the compressed stage.
  Status setMomentumMask(const float* mask);
  // One update from this rank's local gradient; lr < 0 means options().lr.
  Status step(float* params, const float* localGrads, float lr);
  // Zeroes both error-feedback buffers (the no-error-feedback ablation).
  void resetErrorFeedback();

  size_t stateSize() const;
  Status saveState(void* buf, size_t bytes) const;
  Status loadState(const void* buf, size_t bytes);

  long long stepCount() const { return step_; }
  obcclOptimStage_t stage() const { return stage_; }
  long long skippedSteps() const { return skipped_; }
  size_t count() const { return count_; }
  const Options& options() const { return opt_; }
  // Views for tests and diagnostics.
  const std::vector<float>& momentum() const { return m_; }
  const std::vector<float>& variance() const { return v_; }
  const std::vector<float>& mask() const { return mask_; }  // empty: no mask
  bool hasUserMask() const { return userMask_; }
  const std::vector<float>& workerError() const { return workerError_; }
  const std::vector<float>& serverError() const { return serverError_; }
  float rootFloorValue() const { return rootFloorValue_; }

 private:
  OnebitAdam(std::unique_ptr<Reducer> reducer, size_t count, const Options& options);
  Status warmupStep(float* params, const float* localGrads, const UpdateCoeffs& c);
  Status compressedStep(float* params, const float* localGrads, const UpdateCoeffs& c);
  void skip(const float* localGrads, const std::string& where);
  bool autoFreezeDue();
  void freeze();
  void updateRootFloor();
  void ensureErrorBuffers();

  std::unique_ptr<Reducer> reducer_;
  size_t count_;
  Options opt_;
  size_t workerCount_ = 0, serverCount_ = 0;
  long long step_ = 0, skipped_ = 0;
  obcclOptimStage_t stage_ = obcclStageWarmup;
  std::vector<float> m_, v_, scratch_, mask_, workerError_, serverError_;
  bool userMask_ = false, autoMask_ = false;
  float rootFloorValue_ = 0.0f;
  bool havePrevSum_ = false;
  double prevSum_ = 0.0;
};

}  // namespace optim
}  // namespace obccl
