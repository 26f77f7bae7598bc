// hwloc detection into the plain Topology struct, and its description for obccl_info --topo.
#include <hwloc.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>

#include "topo/topology.h"
#include "util/log.h"

namespace obccl::topo {
namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology* t) const { hwloc_topology_destroy(t); }
};
using HwlocTopology = std::unique_ptr<hwloc_topology, TopologyDeleter>;

struct BitmapDeleter {
  void operator()(hwloc_bitmap_s* b) const { hwloc_bitmap_free(b); }
};
using Bitmap = std::unique_ptr<hwloc_bitmap_s, BitmapDeleter>;

Result<HwlocTopology> loadHwloc() {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) return systemError("hwloc_topology_init failed");
  HwlocTopology topo(raw);
  // NICs and GPUs are I/O objects, filtered out by default.
  hwloc_topology_set_io_types_filter(raw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  // On Linux the sysfs backend finds PCI devices itself; the libpciaccess plugin adds nothing
  // here and leaks a little memory on every load (LeakSanitizer reports it).
  hwloc_topology_set_components(raw, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
  if (hwloc_topology_load(raw) != 0)
    return systemError(std::string("hwloc_topology_load failed: ") + std::strerror(errno));
  return topo;
}

std::string bitmapList(hwloc_const_bitmap_t set) {
  if (set == nullptr || hwloc_bitmap_iszero(set)) return "";
  char* text = nullptr;
  if (hwloc_bitmap_list_asprintf(&text, set) < 0 || text == nullptr) return "";
  std::string out(text);
  std::free(text);
  return out;
}

std::vector<int> bitmapIndices(hwloc_const_bitmap_t set) {
  std::vector<int> out;
  if (hwloc_bitmap_weight(set) < 0) return out;  // infinite set: cannot list
  for (int i = hwloc_bitmap_first(set); i >= 0; i = hwloc_bitmap_next(set, i)) out.push_back(i);
  return out;
}

// The CPUs this process may run on: its binding, else every CPU of the machine.
Bitmap boundCpuSet(hwloc_topology_t topo) {
  Bitmap set(hwloc_bitmap_alloc());
  if (hwloc_get_cpubind(topo, set.get(), HWLOC_CPUBIND_PROCESS) != 0 &&
      hwloc_get_cpubind(topo, set.get(), HWLOC_CPUBIND_THREAD) != 0)
    hwloc_bitmap_copy(set.get(), hwloc_topology_get_topology_cpuset(topo));
  return set;
}

std::string pciBusId(hwloc_obj_t obj) {
  for (; obj != nullptr; obj = obj->parent) {
    if (obj->type != HWLOC_OBJ_PCI_DEVICE) continue;
    const auto& p = obj->attr->pcidev;
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%x", p.domain, p.bus, p.dev, p.func);
    return buf;
  }
  return "";
}

// The locality of an I/O object: the CPUs of its first non-I/O ancestor and their NUMA node.
void ioLocality(hwloc_topology_t topo, hwloc_obj_t osdev, std::string* cpus, int* numa) {
  hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, osdev);
  if (anc == nullptr) return;
  *cpus = bitmapList(anc->cpuset);
  if (anc->nodeset != nullptr && hwloc_bitmap_weight(anc->nodeset) == 1)
    *numa = hwloc_bitmap_first(anc->nodeset);
}

// CUDA devices ("cuda0", from hwloc's CUDA plugin) or NVML devices ("nvml0") when only the NVML
// plugin is installed.
bool isNvidiaGpu(hwloc_obj_t o) {
  auto type = o->attr->osdev.type;
  return (type == HWLOC_OBJ_OSDEV_COPROC && std::strncmp(o->name, "cuda", 4) == 0) ||
         (type == HWLOC_OBJ_OSDEV_GPU && std::strncmp(o->name, "nvml", 4) == 0);
}

void collectDevices(hwloc_topology_t topo, Topology* t) {
  for (hwloc_obj_t o = hwloc_get_next_osdev(topo, nullptr); o != nullptr;
       o = hwloc_get_next_osdev(topo, o)) {
    if (o->name == nullptr) continue;
    auto type = o->attr->osdev.type;
    if (type == HWLOC_OBJ_OSDEV_NETWORK || type == HWLOC_OBJ_OSDEV_OPENFABRICS) {
      NicInfo nic;
      nic.name = o->name;
      nic.kind = type == HWLOC_OBJ_OSDEV_NETWORK ? "network" : "openfabrics";
      nic.pciBusId = pciBusId(o);
      ioLocality(topo, o, &nic.cpus, &nic.numaNode);
      t->nics.push_back(nic);
    } else if (isNvidiaGpu(o)) {
      GpuInfo gpu;
      gpu.name = o->name;
      gpu.pciBusId = pciBusId(o);
      ioLocality(topo, o, &gpu.cpus, &gpu.numaNode);
      // The CUDA and NVML plugins may both report one device: keep one entry, named by CUDA.
      GpuInfo* same = nullptr;
      for (GpuInfo& g : t->gpus)
        if (!gpu.pciBusId.empty() && g.pciBusId == gpu.pciBusId) same = &g;
      if (same == nullptr)
        t->gpus.push_back(gpu);
      else if (gpu.name.rfind("cuda", 0) == 0)
        same->name = gpu.name;
    }
  }
}

// The NIC whose local CPUs overlap this process's CPUs the most; ties go to the NIC with the
// more specific locality, then to verbs devices (they carry RDMA traffic).
int nearestNic(hwloc_const_bitmap_t bound, const std::vector<NicInfo>& nics) {
  int best = -1;
  int bestOverlap = -1, bestWidth = 0;
  Bitmap local(hwloc_bitmap_alloc());
  for (size_t i = 0; i < nics.size(); ++i) {
    int overlap = 0, width = 1 << 30;
    if (!nics[i].cpus.empty() && hwloc_bitmap_list_sscanf(local.get(), nics[i].cpus.c_str()) == 0) {
      Bitmap both(hwloc_bitmap_alloc());
      hwloc_bitmap_and(both.get(), local.get(), bound);
      overlap = hwloc_bitmap_weight(both.get());
      width = hwloc_bitmap_weight(local.get());
    }
    bool better = overlap > bestOverlap || (overlap == bestOverlap && width < bestWidth) ||
                  (overlap == bestOverlap && width == bestWidth && best >= 0 &&
                   nics[i].kind == "openfabrics" && nics[best].kind != "openfabrics");
    if (better) {
      best = static_cast<int>(i);
      bestOverlap = overlap;
      bestWidth = width;
    }
  }
  return best;
}

}  // namespace

Result<Topology> detectTopology() {
  OBCCL_ASSIGN_OR_RETURN(HwlocTopology topo, loadHwloc());
  hwloc_topology_t h = topo.get();
  Topology t;
  t.hostId = localHostId();
  t.hostname = hostName();
  t.coreCount = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_CORE);
  t.puCount = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PU);
  t.numaNodeCount = std::max(1, hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_NUMANODE));
  Bitmap bound = boundCpuSet(h);
  for (int pu : bitmapIndices(bound.get())) t.boundCpus.push_back(pu);
  int nodes = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < nodes; ++i) {
    hwloc_obj_t node = hwloc_get_obj_by_type(h, HWLOC_OBJ_NUMANODE, i);
    if (node->cpuset != nullptr && hwloc_bitmap_intersects(node->cpuset, bound.get()))
      t.numaNodes.push_back(static_cast<int>(node->os_index));
  }
  collectDevices(h, &t);
  t.nearestNic = nearestNic(bound.get(), t.nics);
  OBCCL_DEBUG(kSubsysTopo, "topology: %d cores, %d NUMA nodes, %zu NICs, %zu GPUs", t.coreCount,
              t.numaNodeCount, t.nics.size(), t.gpus.size());
  return t;
}

namespace {

std::string listInts(const std::vector<int>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out.empty() ? "-" : out;
}

std::string orDash(const std::string& s) { return s.empty() ? "-" : s; }

}  // namespace

std::string Topology::describe() const {
  std::ostringstream out;
  out << "hostid " << hostId << "\n";
  out << "cpus cores " << coreCount << " threads " << puCount << " bound " << listInts(boundCpus)
      << "\n";
  out << "numa nodes " << numaNodeCount << " local " << listInts(numaNodes) << "\n";
  for (size_t i = 0; i < nics.size(); ++i) {
    const NicInfo& n = nics[i];
    out << "nic " << n.name << " kind " << n.kind << " pci " << orDash(n.pciBusId) << " numa "
        << n.numaNode << " cpus " << orDash(n.cpus)
        << (static_cast<int>(i) == nearestNic ? " nearest" : "") << "\n";
  }
  if (nics.empty()) out << "nic none\n";
  for (const GpuInfo& g : gpus)
    out << "gpu " << g.name << " pci " << orDash(g.pciBusId) << " numa " << g.numaNode << " cpus "
        << orDash(g.cpus) << "\n";
  if (gpus.empty()) out << "gpu none\n";
  return out.str();
}

}  // namespace obccl::topo
