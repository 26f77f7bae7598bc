// The built-in transports by name. Which exist depends on the build (OBCCL_CORE_HAVE_* from
// src/core/CMakeLists.txt); an absent one gives nullptr and init skips it.
#include "transports/transport.h"

#if OBCCL_CORE_HAVE_TCP
#include "transports/tcp/tcp_transport.h"
#endif
#if OBCCL_CORE_HAVE_SHM && __has_include("transports/shm/shm_transport.h")
#include "transports/shm/shm_transport.h"
#define OBCCL_CORE_SHM_FACTORY 1
#endif
#if OBCCL_CORE_HAVE_UCX && __has_include("transports/ucx/ucx_transport.h")
#include "transports/ucx/ucx_transport.h"
#define OBCCL_CORE_UCX_FACTORY 1
#endif

namespace obccl::transport {

std::unique_ptr<Transport> makeTransport(const std::string& name) {
#if OBCCL_CORE_HAVE_TCP
  if (name == "tcp") return makeTcpTransport();
#endif
#if OBCCL_CORE_SHM_FACTORY
  if (name == "shm") return makeShmTransport();
#endif
#if OBCCL_CORE_UCX_FACTORY
  if (name == "ucx") return makeUcxTransport();
#endif
  (void)name;
  return nullptr;
}

}  // namespace obccl::transport
