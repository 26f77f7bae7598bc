// The root service: one background thread per job that authenticates ranks, checks that they
// agree on the job, and serves allgather rounds. Strangers cost it bounded memory and time.
#pragma once

#include "bootstrap/bootstrap.h"
#include "util/socket.h"

namespace obccl::bootstrap {

// Runs a root service on an already listening socket in a background thread. Options must be
// resolved (no -1 left). The thread ends when every rank has left, when the join deadline
// passes, or after the job failed and the error reached the ranks.
Status launchRootService(UniqueFd listener, SocketAddress address, UniqueIdData id,
                         const RootServiceOptions& options);

}  // namespace obccl::bootstrap
