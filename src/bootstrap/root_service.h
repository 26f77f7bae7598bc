// The root service: one background thread per job that authenticates ranks, checks that they
// agree on the job, and serves allgather rounds. Strangers cost it bounded memory and time.
#pragma once

#include <string>

#include "bootstrap/bootstrap.h"
#include "util/socket.h"

namespace obccl::bootstrap {

// Runs a root service on an already listening socket in a background thread. Options must be
// resolved (no -1 left). The thread ends when every rank has left, when the join deadline
// passes, or after the job failed and the error reached the ranks.
Status launchRootService(UniqueFd listener, SocketAddress address, UniqueIdData id,
                         const RootServiceOptions& options);

// Bootstrap clients of this process, by the local "host:port" of their root connection. A root
// service answers them after every other rank, so that a rank in the root's own process cannot
// end that process (and the root) while another rank's message is still unsent.
void noteLocalClient(const std::string& address, bool connected);

}  // namespace obccl::bootstrap
