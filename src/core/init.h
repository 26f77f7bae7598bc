// How communicators join their job: the entry points of the API layer, which sees only core and
// util (the bootstrap layer stays behind these functions).
#pragma once

#include <memory>

#include "core/comm.h"
#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::core {

// Where and how a rank joins: the decoded unique id (opaque here), rank and size.
struct JoinInfo {
  std::shared_ptr<const bootstrap::UniqueIdData> id;
  int rank = -1;
  int nranks = 0;
  bool startRoot = false;  // obcclCommInitFromEnv on rank 0: run the root service in-process
};

// A fresh id with its root service running in this process (obcclGetUniqueId).
Result<obcclUniqueId> newUniqueId();
// Decodes an id; a garbled one is obcclInvalidArgument naming "commId".
Result<JoinInfo> joinInfoFromUniqueId(const obcclUniqueId& id, int rank, int nranks);
// Reads the environment of DESIGN.md section 3 (first match wins for each item).
Result<JoinInfo> joinInfoFromEnv();
// Starts the root service when asked, then Comm::init.
Status joinComm(Comm& comm, const JoinInfo& info);

}  // namespace obccl::core
