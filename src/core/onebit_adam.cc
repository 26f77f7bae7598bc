#include "core/onebit_adam.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "core/onebit_adam_state.h"
#include "util/log.h"
#include "util/params.h"

namespace obccl::optim {
namespace {

std::string num(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%g", x);
  return buf;
}

Result<double> paramDouble(const char* name) {
  std::string text = paramString(name);
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || end == text.c_str() || *end != '\0' || !std::isfinite(v))
    return invalidArgument(std::string(name) + ": '" + text + "' is not a finite number");
  return v;
}

Status checkRange(bool ok, const char* field, double value, const char* rule) {
  if (ok) return Status::ok();
  return invalidArgument(std::string(field) + " = " + num(value) + " " + rule);
}

}  // namespace

Result<Options> validateOptions(Options o) {
  OBCCL_TRY(
      checkRange(std::isfinite(o.lr) && o.lr >= 0, "config->lr", o.lr, "must be finite and >= 0"));
  OBCCL_TRY(checkRange(o.beta1 >= 0 && o.beta1 < 1, "config->beta1", o.beta1, "must be in [0, 1)"));
  OBCCL_TRY(checkRange(o.beta2 >= 0 && o.beta2 < 1, "config->beta2", o.beta2, "must be in [0, 1)"));
  OBCCL_TRY(checkRange(std::isfinite(o.eps) && o.eps > 0, "config->eps", o.eps,
                       "must be finite and > 0"));
  OBCCL_TRY(checkRange(std::isfinite(o.weightDecay) && o.weightDecay >= 0, "config->weightDecay",
                       o.weightDecay, "must be finite and >= 0"));
  if (o.freezeStep < 1 && o.freezeStep != OBCCL_FREEZE_AUTO)
    return invalidArgument("config->freezeStep = " + std::to_string(o.freezeStep) +
                           " must be >= 1 or OBCCL_FREEZE_AUTO (-1)");
  OBCCL_TRY(checkRange(std::isfinite(o.rootFloor) && o.rootFloor >= 0 && o.rootFloor <= 1,
                       "OBCCL_ONEBIT_ROOT_FLOOR", o.rootFloor, "must be in [0, 1]"));
  AutoFreezeOptions& a = o.autoFreeze;
  OBCCL_TRY(checkRange(std::isfinite(a.tolerance) && a.tolerance > 0, "OBCCL_ONEBIT_FREEZE_TOL",
                       a.tolerance, "must be finite and > 0"));
  if (a.window < 0 || a.minSteps < 0 || a.maxSteps < 0)
    return invalidArgument("OBCCL_ONEBIT_FREEZE_WINDOW, _MIN and _MAX must be >= 0 (0: automatic)");
  // v is an average over about 1/(1-beta2) updates; the automatic values are multiples of it.
  const double tau = 1.0 / (1.0 - static_cast<double>(o.beta2));
  if (a.window == 0) a.window = std::max(10LL, std::llround(0.1 * tau));
  if (a.minSteps == 0) a.minSteps = std::max(1LL, std::llround(tau));
  if (a.maxSteps == 0) a.maxSteps = std::max(a.minSteps, std::llround(5.0 * tau));
  if (a.minSteps > a.maxSteps)
    return invalidArgument("OBCCL_ONEBIT_FREEZE_MIN = " + std::to_string(a.minSteps) +
                           " exceeds OBCCL_ONEBIT_FREEZE_MAX = " + std::to_string(a.maxSteps));
  return o;
}

Result<Options> optionsFromConfig(const obcclOnebitAdamConfig_t* config) {
  Options o;
  if (config != nullptr) {
    if (config->size != sizeof(obcclOnebitAdamConfig_t))
      return invalidArgument("config->size = " + std::to_string(config->size) + ", expected " +
                             std::to_string(sizeof(obcclOnebitAdamConfig_t)) +
                             " (initialize with OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER)");
    if (config->magic != OBCCL_ONEBIT_ADAM_CONFIG_MAGIC)
      return invalidArgument(
          "config->magic is wrong (initialize with "
          "OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER)");
    if (config->version < OBCCL_VERSION(0, 1, 0) || config->version > OBCCL_VERSION_CODE)
      return invalidArgument("config->version = " + std::to_string(config->version) +
                             " is not one this library (" + std::to_string(OBCCL_VERSION_CODE) +
                             ") understands");
    o.lr = config->lr;
    o.beta1 = config->beta1;
    o.beta2 = config->beta2;
    o.eps = config->eps;
    o.weightDecay = config->weightDecay;
    o.freezeStep = config->freezeStep;
  }
  OBCCL_ASSIGN_OR_RETURN(o.rootFloor, paramDouble("OBCCL_ONEBIT_ROOT_FLOOR"));
  OBCCL_ASSIGN_OR_RETURN(o.autoFreeze.tolerance, paramDouble("OBCCL_ONEBIT_FREEZE_TOL"));
  OBCCL_ASSIGN_OR_RETURN(o.autoFreeze.window, paramInt("OBCCL_ONEBIT_FREEZE_WINDOW"));
  OBCCL_ASSIGN_OR_RETURN(o.autoFreeze.minSteps, paramInt("OBCCL_ONEBIT_FREEZE_MIN"));
  OBCCL_ASSIGN_OR_RETURN(o.autoFreeze.maxSteps, paramInt("OBCCL_ONEBIT_FREEZE_MAX"));
  return validateOptions(o);
}

OnebitAdam::OnebitAdam(std::unique_ptr<Reducer> reducer, size_t count, const Options& options)
    : reducer_(std::move(reducer)),
      count_(count),
      opt_(options),
      m_(count, 0.0f),
      v_(count, 0.0f),
      scratch_(count, 0.0f) {}

Result<std::unique_ptr<OnebitAdam>> OnebitAdam::create(std::unique_ptr<Reducer> reducer,
                                                       size_t count, const Options& options) {
  if (reducer == nullptr) return invalidArgument("optimizer: no reducer");
  OBCCL_ASSIGN_OR_RETURN(Options resolved, validateOptions(options));
  size_t worker = 0, server = 0;
  // One rank never compresses (DESIGN.md section 6), so it keeps no error buffers.
  if (reducer->size() > 1) OBCCL_TRY(reducer->errorCounts(count, &worker, &server));
  std::unique_ptr<OnebitAdam> opt(new OnebitAdam(std::move(reducer), count, resolved));
  opt->workerCount_ = worker;
  opt->serverCount_ = server;
  OBCCL_INFO(kSubsysOptim,
             "1-bit Adam: %zu elements, rank %d of %d, lr %g betas (%g, %g) eps %g wd %g, "
             "freeze %s, root floor %g",
             count, opt->reducer_->rank(), opt->reducer_->size(), resolved.lr, resolved.beta1,
             resolved.beta2, resolved.eps, resolved.weightDecay,
             resolved.freezeStep == OBCCL_FREEZE_AUTO ? "auto"
                                                      : std::to_string(resolved.freezeStep).c_str(),
             resolved.rootFloor);
  return opt;
}

Status OnebitAdam::setMomentumMask(const float* mask) {
  if (mask == nullptr && count_ > 0) return invalidArgument("mask is NULL");
  for (size_t i = 0; i < count_; ++i)
    if (mask[i] != 0.0f && mask[i] != 1.0f)
      return invalidArgument("mask[" + std::to_string(i) + "] = " + num(mask[i]) +
                             "; a momentum mask holds only 0 and 1");
  mask_.assign(mask, mask + count_);
  userMask_ = true;
  autoMask_ = false;
  if (stage_ == obcclStageCompressed) updateRootFloor();
  return Status::ok();
}

Status OnebitAdam::step(float* params, const float* localGrads, float lr) {
  if (count_ > 0 && params == nullptr) return invalidArgument("params is NULL");
  if (count_ > 0 && localGrads == nullptr) return invalidArgument("localGrads is NULL");
  if (std::isnan(lr) || std::isinf(lr))
    return invalidArgument("lr = " + num(lr) +
                           " is not finite (pass a negative lr to use the configured one)");
  UpdateCoeffs c{lr < 0 ? opt_.lr : lr, opt_.beta1, opt_.beta2, opt_.eps, opt_.weightDecay};
  // A loaded warmup state may already be past a fixed freeze step.
  if (stage_ == obcclStageWarmup && opt_.freezeStep != OBCCL_FREEZE_AUTO &&
      step_ >= opt_.freezeStep)
    freeze();
  if (stage_ == obcclStageWarmup) return warmupStep(params, localGrads, c);
  return compressedStep(params, localGrads, c);
}

Status OnebitAdam::warmupStep(float* params, const float* localGrads, const UpdateCoeffs& c) {
  const float* g = localGrads;
  if (reducer_->size() > 1) {
    if (count_ > 0) std::memcpy(scratch_.data(), localGrads, count_ * sizeof(float));
    OBCCL_TRY(reducer_->allReduceAverage(scratch_.data(), count_));
    g = scratch_.data();
  }
  // Every rank holds the same average, so a non-finite local gradient anywhere (it makes the
  // average non-finite) is seen by all ranks at once: the skip needs no extra message.
  if (!allFinite(g, count_)) {
    skip(localGrads, "the averaged gradient is not finite");
    return Status::ok();
  }
  warmupUpdate(params, m_.data(), v_.data(), g, count_, c);
  ++step_;
  bool due = opt_.freezeStep == OBCCL_FREEZE_AUTO ? autoFreezeDue() : step_ >= opt_.freezeStep;
  if (due) freeze();
  return Status::ok();
}

Status OnebitAdam::compressedStep(float* params, const float* localGrads, const UpdateCoeffs& c) {
  // The blend goes to scratch so that m stays untouched until the step is certain to happen.
  momentumBlend(scratch_.data(), m_.data(), localGrads, count_, c.beta1);
  if (reducer_->size() == 1) {
    if (!allFinite(scratch_.data(), count_)) {
      skip(localGrads, "the momentum is not finite");
      return Status::ok();
    }
  } else {
    ensureErrorBuffers();
    Status s = reducer_->compressedAllReduce(scratch_.data(), count_, workerError_.data(),
                                             serverError_.data());
    // The compressed allreduce fails with obcclInvalidArgument on every rank, error buffers
    // unchanged, exactly when some rank's input is non-finite: that is the skip consensus.
    if (s.code() == obcclInvalidArgument) {
      skip(localGrads, s.message());
      return Status::ok();
    }
    OBCCL_TRY(s);
  }
  std::swap(m_, scratch_);
  frozenUpdate(params, m_.data(), v_.data(), mask_.empty() ? nullptr : mask_.data(), count_, c,
               rootFloorValue_);
  ++step_;
  return Status::ok();
}

void OnebitAdam::skip(const float* localGrads, const std::string& where) {
  ++skipped_;
  // A run that has diverged skips every step: log the first ten, then at powers of two.
  if (skipped_ > 10 && (skipped_ & (skipped_ - 1)) != 0) return;
  size_t bad = firstNonFinite(localGrads, count_);
  if (bad < count_)
    OBCCL_WARN(kSubsysOptim,
               "1-bit Adam step %lld skipped on every rank: rank %d's gradient[%zu] = %g is not "
               "finite (%lld skipped so far; logged up to 10, then at powers of 2)",
               step_ + 1, reducer_->rank(), bad, static_cast<double>(localGrads[bad]), skipped_);
  else
    OBCCL_WARN(kSubsysOptim,
               "1-bit Adam step %lld skipped on every rank: rank %d's gradient is finite, "
               "another rank's is not (%s; %lld skipped so far)",
               step_ + 1, reducer_->rank(), where.c_str(), skipped_);
}

bool OnebitAdam::autoFreezeDue() {
  const AutoFreezeOptions& a = opt_.autoFreeze;
  if (step_ >= a.maxSteps) return true;
  if (step_ % a.window != 0) return false;
  double sum = sumDouble(v_.data(), count_);
  bool due = havePrevSum_ && step_ >= a.minSteps && sum > 0 &&
             std::fabs(sum - prevSum_) <= a.tolerance * sum;
  OBCCL_DEBUG(kSubsysOptim, "1-bit Adam auto-freeze: step %lld sum(v) %.6g previous %.6g%s", step_,
              sum, prevSum_, due ? " -> freeze" : "");
  prevSum_ = sum;
  havePrevSum_ = true;
  return due;
}

void OnebitAdam::freeze() {
  stage_ = obcclStageCompressed;
  size_t zeros = 0;
  if (!userMask_) {
    // 1-bit compression cannot send an exact zero: a coordinate that never had a gradient would
    // collect +-scale momentum divided by eps. Mask those.
    for (size_t i = 0; i < count_; ++i) zeros += v_[i] == 0.0f;
    if (zeros > 0) {
      mask_.resize(count_);
      for (size_t i = 0; i < count_; ++i) mask_[i] = v_[i] == 0.0f ? 0.0f : 1.0f;
      autoMask_ = true;
    }
  }
  updateRootFloor();
  size_t floored = 0;
  for (size_t i = 0; i < count_; ++i)
    floored += (mask_.empty() || mask_[i] != 0.0f) && std::sqrt(v_[i]) < rootFloorValue_;
  OBCCL_INFO(kSubsysOptim,
             "1-bit Adam rank %d: variance frozen after %lld updates; %zu coordinates masked "
             "automatically, root floor %g (%zu coordinates below it)",
             reducer_->rank(), step_, zeros, static_cast<double>(rootFloorValue_), floored);
}

void OnebitAdam::updateRootFloor() {
  rootFloorValue_ = 0.0f;
  if (opt_.rootFloor <= 0) return;
  size_t included = 0;
  double sum =
      maskedSumDouble(v_.data(), mask_.empty() ? nullptr : mask_.data(), count_, &included);
  if (included > 0)
    rootFloorValue_ = static_cast<float>(opt_.rootFloor * std::sqrt(sum / included));
}

void OnebitAdam::ensureErrorBuffers() {
  if (workerError_.size() != workerCount_) workerError_.assign(workerCount_, 0.0f);
  if (serverError_.size() != serverCount_) serverError_.assign(serverCount_, 0.0f);
}

void OnebitAdam::resetErrorFeedback() {
  std::fill(workerError_.begin(), workerError_.end(), 0.0f);
  std::fill(serverError_.begin(), serverError_.end(), 0.0f);
}

}  // namespace obccl::optim
