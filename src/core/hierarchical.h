// The hierarchical compressed allreduce (DESIGN.md section 5): when ranks sit on several hosts,
// only the hop between hosts is compressed.
//
// Supported layouts: H hosts with the same number L of ranks each (hosts and local ranks as in
// Comm::hostMap()). config().hierarchical = -1 (auto) picks this schedule when H >= 2, L >= 2
// and every host holds L ranks, and the flat one (section 4) otherwise; 1 forces it (on one
// host too: the shard is then compressed over a group of one), and is obcclInvalidUsage when the
// hosts hold different numbers of ranks (the result would no longer be an average over ranks);
// with L = 1 the two schedules are the same and the flat one runs. 0 always runs the flat one.
//
// Layout of a call with N elements on n = H * L ranks: Np = N rounded up to a multiple of 8n
// (as the flat schedule), shard size S = Np / L (a multiple of 8H). Local rank k of every host
// owns shard k, elements [k*S, (k+1)*S); elements at or past N are zero padding.
//
//   1. Reduce-scatter inside each host, uncompressed: local rank k receives shard k from every
//      rank of its host and forms the host average in fp32,
//        v_i = (((x_0,i + x_1,i) + x_2,i) + ... + x_(L-1),i) / L
//      (inputs converted exactly to fp32, added in local-rank order, one IEEE division by L;
//      v_i = 0 on the padding). These frames carry no payload checksum, as in any uncompressed
//      collective (Comm::setPayloadChecksums); the compressed ones below keep theirs.
//   2. Input agreement across all ranks: each rank checks u = v + workerError over its shard and
//      its serverError. A non-finite value anywhere makes every rank fail with
//      obcclInvalidArgument, naming the ranks whose sendbuff, workerError or serverError holds
//      NaN or Inf, before any error buffer is touched; the communicator stays usable.
//   3. One compressed allreduce (section 4, float32, count S) per local index k across hosts:
//      group = the ranks with local rank k, in host order. Each rank's error buffers describe
//      its shard: workerError has S floats, serverError S / H (obcclCompressedAllReduceErrorCounts
//      returns these).
//   4. Allgather inside each host of the shards' outputs. Every output value of a shard is +b or
//      -b of its scale group (a chunk of the cross-host step, or a block), so they travel packed:
//      the groups' b and one sign bit per value; each rank decodes its peers' shards into
//      recvbuff in the caller's datatype, to the same bits as the shard's owner.
//
// So recvbuff = the section-4 compressed average over hosts of each host's average: an average
// over all ranks (hosts hold equal rank counts), bitwise identical on every rank.
//
// OBCCL_DEBUG=DEBUG (subsystem COLL) logs the time of each of the four phases per call.
//
// Values so large that the cross-host step could overflow (|v + e| or |s| above 2^64, far
// beyond gradients) take a slower path: the error buffers are saved first and restored on every
// rank if any host group's step fails, so failures stay all-or-nothing there too.
#pragma once

#include <cstddef>

#include "core/comm.h"
#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::core {

// Which schedule the compressed allreduce on all ranks of a communicator uses.
struct HierPlan {
  bool active = false;  // false: the flat schedule
  int hosts = 1;        // H
  int local = 1;        // L: ranks per host
  Group intra;          // this rank's host, in local-rank order
  Group cross;          // the ranks with this rank's local rank, in host order
};

// The plan for config().hierarchical and hostMap(); obcclInvalidUsage when hierarchical = 1 on
// hosts with different rank counts.
Result<HierPlan> hierarchicalPlan(const Comm& comm);

// Error-buffer sizes of an active plan: workerCount = S, serverCount = S / H.
Status hierarchicalErrorCounts(const HierPlan& plan, size_t count, size_t* workerCount,
                               size_t* serverCount);

// The hierarchical compressed allreduce of an active plan (arguments already checked as for
// compressedAllReduce; recv == send allowed; count 0 is a no-op).
Status hierarchicalCompressedAllReduce(Comm& comm, const HierPlan& plan, const void* send,
                                       void* recv, size_t count, obcclDataType_t datatype,
                                       float* workerError, float* serverError);

}  // namespace obccl::core
