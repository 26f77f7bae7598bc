#include "tools/obccl_info/report.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "obccl/obccl.h"
#include "obccl/version.h"
#include "util/params.h"
#ifdef OBCCL_INFO_HAVE_TOPO
#include "topo/topology.h"
#endif

#ifndef OBCCL_INFO_BUILD_TYPE
#define OBCCL_INFO_BUILD_TYPE "unknown"
#endif

namespace obccl::info {
namespace {

const char* typeName(ParamType t) {
  switch (t) {
    case ParamType::kInt:
      return "int";
    case ParamType::kBool:
      return "bool";
    case ParamType::kString:
      return "string";
  }
  return "?";
}

// The value to show: secrets are never printed, only whether they are set.
std::string shownValue(const ParamInfo& p) {
  std::string v = paramRaw(p.name);
  if (std::string(p.name).find("SECRET") != std::string::npos && paramIsSet(p.name))
    return "<set, " + std::to_string(v.size()) + " characters, not shown>";
  return v;
}

// Empty when the current value parses as the parameter's type, else the reason.
std::string problemWith(const ParamInfo& p) {
  if (!paramIsSet(p.name)) return "";
  Status s;
  if (p.type == ParamType::kInt) s = paramInt(p.name).status();
  if (p.type == ParamType::kBool) s = paramBool(p.name).status();
  return s.isOk() ? "" : s.message();
}

std::string addressText(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof(buf));
  else
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof(buf));
  return buf;
}

}  // namespace

void printVersion() {
  // obccl_info links the internal layers, not libobccl, so this is the version it was built from.
  std::printf("obccl %s (version code %d)\n", OBCCL_VERSION_STRING, OBCCL_VERSION_CODE);
}

void printBuild() {
  std::printf("build:\n");
  std::printf("  build type     %s\n", OBCCL_INFO_BUILD_TYPE);
  std::printf("  compiler       %s\n", __VERSION__);
  std::printf("  UCX transport  %s\n", OBCCL_BUILD_WITH_UCX_STR);
  std::printf("  CUDA kernels   %s\n", OBCCL_BUILD_WITH_CUDA_STR);
#ifdef OBCCL_INFO_HAVE_TOPO
  std::printf("  topology       hwloc\n");
#else
  std::printf("  topology       not built\n");
#endif
}

bool printParams() {
  bool ok = true;
  std::printf(
      "# obccl parameters (environment; a config struct field overrides its "
      "parameter)\n");
  for (const ParamInfo& p : allParams()) {
    std::printf("\n# %s\n", p.help);
    std::printf("# type %s, default '%s'%s\n", typeName(p.type), p.defaultValue,
                paramIsSet(p.name) ? ", set in the environment" : "");
    std::string problem = problemWith(p);
    if (!problem.empty()) {
      std::printf("# INVALID: %s\n", problem.c_str());
      ok = false;
    }
    std::printf("%s=%s\n", p.name, shownValue(p).c_str());
  }
  return ok;
}

bool printInterfaces() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    std::perror("obccl_info: getifaddrs");
    return false;
  }
  // Group addresses by interface, in the order the kernel lists them.
  std::vector<std::string> order;
  std::map<std::string, std::pair<unsigned, std::vector<std::string>>> byName;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    auto [it, added] = byName.try_emplace(a->ifa_name);
    if (added) order.push_back(a->ifa_name);
    it->second.first |= a->ifa_flags;
    if (a->ifa_addr && (a->ifa_addr->sa_family == AF_INET || a->ifa_addr->sa_family == AF_INET6))
      it->second.second.push_back(addressText(a->ifa_addr));
  }
  freeifaddrs(list);
  std::printf("network interfaces (OBCCL_SOCKET_IFNAME selects among them):\n");
  for (const auto& name : order) {
    const auto& [flags, addrs] = byName[name];
    std::string text;
    for (const auto& s : addrs) text += " " + s;
    std::printf("  %-12s %-4s%s%s\n", name.c_str(), (flags & IFF_UP) ? "up" : "down",
                (flags & IFF_LOOPBACK) ? " loopback" : "", text.c_str());
  }
  return true;
}

bool printTopology() {
#ifdef OBCCL_INFO_HAVE_TOPO
  Result<topo::Topology> t = topo::detectTopology();
  if (!t.isOk()) {
    std::fprintf(stderr, "obccl_info: topology detection failed: %s\n",
                 t.status().message().c_str());
    return false;
  }
  std::printf("topology of this host (hwloc):\n%s", t.value().describe().c_str());
  if (!t.value().describe().empty() && t.value().describe().back() != '\n') std::printf("\n");
  return true;
#else
  std::printf("topology: this obccl_info was built without the topo layer\n");
  return true;
#endif
}

}  // namespace obccl::info
