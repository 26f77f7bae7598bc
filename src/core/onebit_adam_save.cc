// Saving and loading the 1-bit Adam helper's state (format in core/onebit_adam_state.h).
#include <string>
#include <utility>

#include "core/onebit_adam.h"
#include "core/onebit_adam_state.h"
#include "util/log.h"

namespace obccl::optim {

size_t OnebitAdam::stateSize() const {
  StateHeader h;
  h.count = count_;
  h.workerErrorCount = workerCount_;
  h.serverErrorCount = serverCount_;
  return stateBlobBytes(h);
}

Status OnebitAdam::saveState(void* buf, size_t bytes) const {
  size_t need = stateSize();
  if (buf == nullptr) return invalidArgument("buf is NULL");
  if (bytes < need)
    return invalidArgument("buf holds " + std::to_string(bytes) + " bytes; the state needs " +
                           std::to_string(need) + " (obcclOnebitAdamStateSize)");
  StateHeader h;
  h.count = count_;
  h.rank = reducer_->rank();
  h.worldSize = reducer_->size();
  h.step = step_;
  h.stage = stage_;
  h.flags = (userMask_ ? kStateUserMask : 0u) | (autoMask_ ? kStateAutoMask : 0u) |
            (havePrevSum_ ? kStateHavePrevSum : 0u);
  h.skipped = skipped_;
  h.workerErrorCount = workerCount_;
  h.serverErrorCount = serverCount_;
  h.prevVarianceSum = havePrevSum_ ? prevSum_ : 0.0;
  StateSections s;
  s.m = m_.data();
  s.v = v_.data();
  s.mask = mask_.empty() ? nullptr : mask_.data();
  s.workerError = workerError_.size() == workerCount_ ? workerError_.data() : nullptr;
  s.serverError = serverError_.size() == serverCount_ ? serverError_.data() : nullptr;
  writeStateBlob(h, s, buf);
  return Status::ok();
}

Status OnebitAdam::loadState(const void* buf, size_t bytes) {
  if (buf == nullptr) return invalidArgument("buf is NULL");
  StateHeader h;
  ParsedSections s;
  OBCCL_TRY(parseStateBlob(buf, bytes, &h, &s));
  if (h.count != count_)
    return invalidArgument("state blob holds " + std::to_string(h.count) +
                           " elements; this optimizer has " + std::to_string(count_));
  const bool sameLayout = h.rank == reducer_->rank() && h.worldSize == reducer_->size() &&
                          h.workerErrorCount == workerCount_ && h.serverErrorCount == serverCount_;
  // Build everything first; the swaps below cannot fail, so a failure leaves the state as it was.
  std::vector<float> m(count_), v(count_), mask, worker, server;
  copyFloats(m.data(), s.m, count_);
  copyFloats(v.data(), s.v, count_);
  if (h.flags & (kStateUserMask | kStateAutoMask)) {
    mask.resize(count_);
    copyFloats(mask.data(), s.mask, count_);
  }
  if (h.stage == obcclStageCompressed || sameLayout) {
    worker.assign(workerCount_, 0.0f);
    server.assign(serverCount_, 0.0f);
    if (sameLayout) {
      copyFloats(worker.data(), s.workerError, workerCount_);
      copyFloats(server.data(), s.serverError, serverCount_);
    }
  }
  std::swap(m_, m);
  std::swap(v_, v);
  std::swap(mask_, mask);
  std::swap(workerError_, worker);
  std::swap(serverError_, server);
  step_ = h.step;
  skipped_ = h.skipped;
  stage_ = static_cast<obcclOptimStage_t>(h.stage);
  userMask_ = (h.flags & kStateUserMask) != 0;
  autoMask_ = (h.flags & kStateAutoMask) != 0;
  havePrevSum_ = (h.flags & kStateHavePrevSum) != 0;
  prevSum_ = havePrevSum_ ? h.prevVarianceSum : 0.0;
  if (stage_ == obcclStageCompressed) updateRootFloor();
  if (!sameLayout)
    OBCCL_WARN(kSubsysOptim,
               "1-bit Adam state saved by rank %d of %d (error buffers %llu + %llu) loaded into "
               "rank %d of %d (%zu + %zu): kept m, v, step %lld and stage %s; the error-feedback "
               "buffers were zeroed",
               h.rank, h.worldSize, static_cast<unsigned long long>(h.workerErrorCount),
               static_cast<unsigned long long>(h.serverErrorCount), reducer_->rank(),
               reducer_->size(), workerCount_, serverCount_, static_cast<long long>(h.step),
               h.stage == obcclStageCompressed ? "compressed" : "warmup");
  return Status::ok();
}

}  // namespace obccl::optim
