// obccl_info: what this obccl installation is, and how it is configured here.
#include <cstdio>
#include <cstring>

#include "tools/obccl_info/report.h"

namespace {

const char kUsage[] =
    "usage: obccl_info [options]\n"
    "\n"
    "With no option: version, build options and network interfaces.\n"
    "  -v, --version     the version only\n"
    "  -b, --build       build options\n"
    "  -p, --params      every OBCCL_* parameter: type, default, current value, help\n"
    "  -i, --interfaces  network interfaces and their addresses\n"
    "  -t, --topo        the topology detected on this host\n"
    "  -a, --all         everything above\n"
    "  -h, --help        this text\n";

}  // namespace

int main(int argc, char** argv) {
  bool version = false, build = false, params = false, ifaces = false, topo = false;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    auto is = [a](const char* s, const char* l) {
      return !std::strcmp(a, s) || !std::strcmp(a, l);
    };
    if (is("-h", "--help")) {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (is("-v", "--version")) {
      version = true;
    } else if (is("-b", "--build")) {
      build = true;
    } else if (is("-p", "--params")) {
      params = true;
    } else if (is("-i", "--interfaces")) {
      ifaces = true;
    } else if (is("-t", "--topo")) {
      topo = true;
    } else if (is("-a", "--all")) {
      version = build = params = ifaces = topo = true;
    } else {
      std::fprintf(stderr, "obccl_info: unknown option '%s'\n%s", a, kUsage);
      return 2;
    }
  }
  if (argc == 1) version = build = ifaces = true;
  bool ok = true;
  if (version) obccl::info::printVersion();
  if (build) obccl::info::printBuild();
  if (params) ok = obccl::info::printParams() && ok;
  if (ifaces) ok = obccl::info::printInterfaces() && ok;
  if (topo) ok = obccl::info::printTopology() && ok;
  return ok ? 0 : 1;
}
