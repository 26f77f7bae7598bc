// Topology: who this process is on its host (hwloc: NUMA nodes, CPU binding, NICs, GPUs) and
// which ranks share a host (the rank -> host map, optionally overridden by OBCCL_TOPO_FILE).
//
// OBCCL_TOPO_FILE format (one statement per line; '#' starts a comment; blank lines ignored):
//   rank <r> host <name>            rank r lives on host <name>
//   host <name> ranks <list>        list: comma-separated ranks or ranges, e.g. 0,1,4-7
//   nranks <n>                      optional: the file describes exactly n ranks
//   numa|cpus|nic|gpu|hostid|detail ...   detail lines written by OBCCL_TOPO_DUMP_FILE; ignored
// Every rank of the communicator must be named exactly once. Host names are opaque tokens
// (no spaces); two ranks with the same name are treated as being on the same host.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace obccl::topo {

// This host's identity, "<hostname>:<boot id>" (the boot id tells apart containers or VMs that
// share a hostname). OBCCL_HOST_ID, when set, replaces it (tests fake several hosts with it).
std::string localHostId();
// gethostname(), or "localhost" when it fails.
std::string hostName();

// A network device as hwloc reports it.
struct NicInfo {
  std::string name;      // OS name: "eth0", "mlx5_0"
  std::string kind;      // "network" (netdev) or "openfabrics" (verbs device)
  std::string pciBusId;  // "0000:3b:00.0", empty when not on PCI (virtual devices)
  int numaNode = -1;     // OS index of the closest NUMA node, -1 when unknown
  std::string cpus;      // CPUs local to the device, as a list ("0-15"); empty when unknown
};

// An NVIDIA GPU as hwloc reports it: CUDA OS devices, or NVML ones when only that plugin is
// installed (present only when hwloc has such a plugin).
struct GpuInfo {
  std::string name;  // "cuda0"
  std::string pciBusId;
  int numaNode = -1;
  std::string cpus;
};

// What hwloc detected about this process's host, as plain data.
struct Topology {
  std::string hostId;  // localHostId()
  std::string hostname;
  int coreCount = 0;           // physical cores on the host
  int puCount = 0;             // hardware threads on the host
  int numaNodeCount = 0;       // NUMA nodes on the host (at least 1)
  std::vector<int> boundCpus;  // OS indices of the PUs this process may run on
  std::vector<int> numaNodes;  // OS indices of the NUMA nodes this process's CPUs touch
  std::vector<NicInfo> nics;
  std::vector<GpuInfo> gpus;
  int nearestNic = -1;  // index into nics of the NIC closest to this process, -1: none

  // Multi-line human-readable text (obccl_info --topo).
  std::string describe() const;
};

// Runs hwloc detection (I/O devices included). Fails only when hwloc itself fails.
Result<Topology> detectTopology();

// Which ranks share a host, derived from one host id per rank.
struct HostMap {
  std::vector<std::string> hostOf;          // per rank: host id (or name from the topo file)
  std::vector<std::string> hosts;           // distinct hosts, in order of their first rank
  std::vector<int> hostIndex;               // per rank: index into hosts
  std::vector<int> localRank;               // per rank: position among the ranks of its host
  std::vector<std::vector<int>> hostRanks;  // per host: its ranks, ascending

  int nranks() const { return static_cast<int>(hostOf.size()); }
  int nhosts() const { return static_cast<int>(hosts.size()); }
  int localSize(int rank) const { return static_cast<int>(hostRanks[hostIndex[rank]].size()); }
  int maxLocalSize() const;
  int minLocalSize() const;
  // Ranks whose localRank is `local`, one per host that has that many ranks, by host order.
  std::vector<int> ranksWithLocalRank(int local) const;
  bool sameHost(int a, int b) const { return hostIndex[a] == hostIndex[b]; }
};

// Derives hosts, hostIndex, localRank and hostRanks from per-rank host ids.
HostMap makeHostMap(std::vector<std::string> hostOf);

// Parses topo file text naming the host of each of nranks ranks. `source` (a path) prefixes
// every error, with the line number: "topo.txt:3: rank 9 is out of range (nranks 4)".
Result<std::vector<std::string>> parseTopoText(const std::string& text, int nranks,
                                               const std::string& source);
// Reads and parses a topo file.
Result<std::vector<std::string>> loadTopoFile(const std::string& path, int nranks);

// Builds the map from the host ids gathered from every rank (localHostId() of each), replaced by
// the contents of OBCCL_TOPO_FILE when that parameter is set.
Result<HostMap> buildHostMap(const std::vector<std::string>& gathered);
// Same, with an explicit topo file path (empty: use the gathered ids).
Result<HostMap> buildHostMap(const std::vector<std::string>& gathered, const std::string& path);

// The topo file text for a map (rank lines), followed by detail lines for `topo` when given.
std::string formatTopoText(const HostMap& map, const Topology* topo, int rank);
// Writes formatTopoText to path; "%r" in path becomes the rank, "%h" the hostname, "%p" the pid.
Status dumpTopoFile(const std::string& path, const HostMap& map, const Topology* topo, int rank);
// dumpTopoFile to OBCCL_TOPO_DUMP_FILE when that parameter is set; ok otherwise. Only rank 0
// writes unless the path names a per-rank file (%r, %h or %p). topo null: detected here.
Status dumpTopoIfRequested(const HostMap& map, const Topology* topo, int rank);

}  // namespace obccl::topo
