// The host identity: hostname plus the kernel's boot id, overridable with OBCCL_HOST_ID.
#include <unistd.h>

#include <climits>
#include <fstream>
#include <string>

#include "topo/topology.h"
#include "util/params.h"

namespace obccl::topo {
namespace {

std::string readBootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!(in >> id)) return "noboot";  // non-Linux or restricted /proc: hostname alone decides
  return id;
}

}  // namespace

std::string hostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

std::string localHostId() {
  if (paramIsSet("OBCCL_HOST_ID")) return paramString("OBCCL_HOST_ID");
  // The boot id is read once: it cannot change while the process runs.
  static const std::string kBootId = readBootId();
  return hostName() + ":" + kBootId;
}

}  // namespace obccl::topo
