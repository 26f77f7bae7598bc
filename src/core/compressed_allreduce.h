// The 1-bit compressed allreduce with error feedback (DESIGN.md section 4), on all ranks of a
// communicator or on a group of them.
//
// Shape of one call on n ranks: the input is zero-padded to Np (a multiple of 8n) and cut into n
// chunks of c = Np/n; chunks are cut into segments (config().segmentBytes of fp32 input, a
// multiple of compressBlock). Phase 1 is an all-to-all of packed worker signs, one frame per
// segment carrying the scales of that segment's blocks (with compressBlock = 0, a chunk's last
// frame carries the one scale a_r of the whole vector, so the others leave before the norm is
// complete). Phase 2 is an all-gather of each rank's packed server signs, one frame per
// segment carrying the server scales and the set of ranks whose scales it saw non-finite. Every
// frame is flagged compressed and carries a CRC32C of its payload, checked on receipt. Frames
// leave while later segments are still being compressed.
//
// No error buffer is written before both phases are complete: at that point every rank knows
// every rank's scales (directly or through the phase-2 reports), so all ranks either fail alike
// with obcclInvalidArgument naming the ranks with non-finite data, the communicator staying
// usable, or update their error buffers and decode the output.
#pragma once

#include <cstddef>

#include "core/comm.h"
#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::core {

// Padding and chunking of a compressed allreduce of `count` elements over `nranks` ranks.
struct CompressedLayout {
  size_t count = 0;   // N
  size_t padded = 0;  // Np: N rounded up to a multiple of 8 * nranks (0 for N = 0)
  size_t chunk = 0;   // c = Np / nranks: elements of each rank's server chunk
};

// The layout, or obcclInvalidArgument when Np would overflow.
Result<CompressedLayout> compressedLayout(size_t count, int nranks);

// Element counts of the worker (Np) and server (c) error buffers on this rank; group == nullptr
// means every rank of the communicator (where the hierarchical schedule of hierarchical.h, when
// active, decides the counts and runs the call instead).
Status compressedErrorCounts(const Comm& comm, size_t count, size_t* workerCount,
                             size_t* serverCount, const Group* group = nullptr);

// recv = the compressed average over the group of send (count elements of float32, float16 or
// bfloat16; recv == send allowed), with this rank's error buffers workerError (Np floats) and
// serverError (c floats), zeroed before the first call and passed unchanged between calls.
// Uses config().compressBlock and config().codec. count = 0 is a no-op.
Status compressedAllReduce(Comm& comm, const void* send, void* recv, size_t count,
                           obcclDataType_t datatype, float* workerError, float* serverError,
                           const Group* group = nullptr);

}  // namespace obccl::core
