// The 1-bit Adam helper's Reducer over a communicator: the uncompressed average through
// Comm::allReduce and the momentum through the compressed allreduce (DESIGN.md section 4).
#include <memory>

#include "core/comm.h"
#include "core/onebit_adam.h"

namespace obccl::optim {
namespace {

class CommReducer : public Reducer {
 public:
  explicit CommReducer(core::Comm* comm) : comm_(comm) {}
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->nranks(); }

  Status allReduceAverage(float* data, size_t count) override {
    return comm_->allReduce(data, data, count, obcclFloat32, obcclAvg);
  }

  // Until the compressed allreduce is part of the build, the helper can only run its warmup.
  Status errorCounts(size_t count, size_t* worker, size_t* server) override {
    *worker = 0;
    *server = 0;
    return Status::ok();
  }
  Status compressedAllReduce(float*, size_t, float*, float*) override {
    return internalError("this build has no compressed allreduce (core/compressed_allreduce.h)");
  }

 private:
  core::Comm* comm_;
};

}  // namespace

std::unique_ptr<Reducer> makeCommReducer(core::Comm* comm) {
  return std::make_unique<CommReducer>(comm);
}

}  // namespace obccl::optim
