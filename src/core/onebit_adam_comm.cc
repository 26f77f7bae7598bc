// The 1-bit Adam helper's Reducer over a communicator: the uncompressed average through
// Comm::allReduce and the momentum through the compressed allreduce (DESIGN.md section 4).
#include <memory>

#include "core/comm.h"
#include "core/compressed_allreduce.h"
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

  Status errorCounts(size_t count, size_t* worker, size_t* server) override {
    return core::compressedErrorCounts(*comm_, count, worker, server);
  }

  // Fails with obcclInvalidArgument on every rank, error buffers untouched and the communicator
  // still usable, when some rank's data is non-finite: the helper's skip consensus.
  Status compressedAllReduce(float* data, size_t count, float* workerError,
                             float* serverError) override {
    return core::compressedAllReduce(*comm_, data, data, count, obcclFloat32, workerError,
                                     serverError);
  }

 private:
  core::Comm* comm_;
};

}  // namespace

std::unique_ptr<Reducer> makeCommReducer(core::Comm* comm) {
  return std::make_unique<CommReducer>(comm);
}

}  // namespace obccl::optim
