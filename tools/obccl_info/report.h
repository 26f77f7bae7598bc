// The sections obccl_info prints; each writes to stdout and returns false on a problem.
#pragma once

namespace obccl::info {

void printVersion();
void printBuild();
// Every registered parameter as a commented NAME=value line (ucx_info -c style); returns false
// when an environment value does not parse.
bool printParams();
bool printInterfaces();
bool printTopology();

}  // namespace obccl::info
