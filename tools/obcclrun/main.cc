// obcclrun: the single-machine launcher. See launcher.h and `obcclrun --help`.
#include <cstdio>

#include "tools/obcclrun/launcher.h"

int main(int argc, char** argv) {
  bool help = false;
  auto options = obccl::run::parseOptions(argc, argv, &help);
  if (help) {
    std::fputs(obccl::run::usageText(), stdout);
    return 0;
  }
  if (!options.isOk()) {
    std::fprintf(stderr, "obcclrun: %s\n%s", options.status().message().c_str(),
                 obccl::run::usageText());
    return obccl::run::kLauncherErrorStatus;
  }
  return obccl::run::runJob(options.value());
}
