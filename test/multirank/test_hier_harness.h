// Shared by the test_hier_*.cc multirank tests: worlds whose ranks an OBCCL_TOPO_FILE spreads
// over pretend hosts, and the reference composition of the hierarchical compressed allreduce
// (src/core/hierarchical.h), built from plain loops and the section-4 simulation.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "multirank/test_compressed_harness.h"

namespace obccl_test {

// Which pretend host each rank lives on: hostOf[r] is a host number.
struct HostLayout {
  std::string name;
  std::vector<int> hostOf;

  int nranks() const { return static_cast<int>(hostOf.size()); }
  // Hosts in order of their first rank, each with its ranks ascending: the library's order
  // (topo::makeHostMap), which decides local ranks and the order of the cross-host groups.
  std::vector<std::vector<int>> hostRanks() const {
    std::vector<int> seen;
    std::vector<std::vector<int>> out;
    for (int r = 0; r < nranks(); ++r) {
      size_t h = 0;
      while (h < seen.size() && seen[h] != hostOf[r]) ++h;
      if (h == seen.size()) {
        seen.push_back(hostOf[r]);
        out.emplace_back();
      }
      out[h].push_back(r);
    }
    return out;
  }
};

inline std::ostream& operator<<(std::ostream& os, const HostLayout& l) { return os << l.name; }

// A topo file naming the layout's hosts, removed at scope end.
class TopoFile {
 public:
  explicit TopoFile(const HostLayout& layout) {
    char tmpl[] = "/tmp/obccl-hier-topo-XXXXXX";
    int fd = ::mkstemp(tmpl);
    if (fd < 0) return;
    path_ = tmpl;
    std::string text = "nranks " + std::to_string(layout.nranks()) + "\n";
    for (int r = 0; r < layout.nranks(); ++r)
      text += "rank " + std::to_string(r) + " host fake" + std::to_string(layout.hostOf[r]) + "\n";
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!ok) path_.clear();
  }
  ~TopoFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TopoFile(const TopoFile&) = delete;
  TopoFile& operator=(const TopoFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct HierOptions {
  int hierarchical = -1;    // config->hierarchical
  int block = 0;            // config->compressBlock
  size_t segmentBytes = 0;  // > 0: OBCCL_SEGMENT_BYTES during init (several frames per phase)
  bool useTopo = true;      // false: no topo file (every rank on this one host)
};

// The layout's ranks as threads, over the default transport order, with the options above.
inline World makeHierWorld(const HostLayout& layout, const HierOptions& o) {
  TopoFile topo(layout);
  World w;
  if (o.useTopo && topo.path().empty()) {
    w.result = obcclSystemError;
    w.error = "cannot write a topo file in /tmp";
    return w;
  }
  if (o.useTopo) ::setenv("OBCCL_TOPO_FILE", topo.path().c_str(), 1);
  if (o.segmentBytes > 0)
    ::setenv("OBCCL_SEGMENT_BYTES", std::to_string(o.segmentBytes).c_str(), 1);
  const int n = layout.nranks();
  obcclUniqueId id;
  w.result = obcclGetUniqueId(&id);
  if (w.result == obcclSuccess) {
    std::vector<obcclComm_t> comms(n, nullptr);
    std::vector<std::string> errors(n);
    obcclConfig_t cfg = makeConfig(kAnyTransport);
    cfg.compressBlock = o.block;
    cfg.hierarchical = o.hierarchical;
    auto rcs = runRanks<obcclResult_t>(n, [&](int r) {
      obcclResult_t rc = obcclCommInitRankConfig(&comms[r], n, id, r, &cfg);
      if (rc != obcclSuccess) errors[r] = obcclGetLastError(nullptr);
      return rc;
    });
    w.comms = comms;
    for (int r = 0; r < n; ++r) {
      if (rcs[r] != obcclSuccess && w.ok()) {
        w.result = rcs[r];
        w.error = "rank " + std::to_string(r) + ": " + errors[r];
      }
    }
    if (!w.ok()) w.destroy();
  } else {
    w.error = obcclGetLastError(nullptr);
  }
  ::unsetenv("OBCCL_TOPO_FILE");
  ::unsetenv("OBCCL_SEGMENT_BYTES");
  return w;
}

// The hierarchical compressed allreduce simulated in one process: per host, the fp32 average of
// each shard in local-rank order; per local index k, the section-4 exact simulation across hosts
// of shard k with the error buffers of that group's ranks; the shards side by side.
class HierReference {
 public:
  HierReference(const HostLayout& layout, size_t count, size_t block)
      : hosts_(layout.hostRanks()), count_(count) {
    const int n = layout.nranks(), h = static_cast<int>(hosts_.size());
    local_ = static_cast<int>(hosts_[0].size());
    const size_t unit = 8 * static_cast<size_t>(n);
    padded_ = (count + unit - 1) / unit * unit;
    shard_ = padded_ / static_cast<size_t>(local_);
    shardLayout_ = onebitLayout(shard_, h, block);
    groups_.assign(local_, OnebitErrors::zero(shardLayout_));
    hostIndex_.assign(n, 0);
    localRank_.assign(n, 0);
    for (int i = 0; i < h; ++i)
      for (int l = 0; l < local_; ++l) {
        hostIndex_[hosts_[i][l]] = i;
        localRank_[hosts_[i][l]] = l;
      }
  }

  size_t shard() const { return shard_; }
  size_t chunk() const { return shardLayout_.chunk; }
  // Rank r's error buffers as the simulation has them.
  const std::vector<float>& worker(int r) const {
    return groups_[localRank_[r]].worker[hostIndex_[r]];
  }
  const std::vector<float>& server(int r) const {
    return groups_[localRank_[r]].server[hostIndex_[r]];
  }

  // One call on inputs x[r] (count fp32 values per rank); returns the count output values.
  std::vector<float> step(const std::vector<std::vector<float>>& x) {
    std::vector<float> y(count_);
    const float l = static_cast<float>(local_);
    for (int k = 0; k < local_; ++k) {
      std::vector<std::vector<float>> v(hosts_.size(), std::vector<float>(shard_, 0.0f));
      for (size_t h = 0; h < hosts_.size(); ++h) {
        for (size_t i = 0; i < shard_; ++i) {
          size_t g = k * shard_ + i;
          if (g >= count_) break;
          float acc = x[hosts_[h][0]][g];
          for (int j = 1; j < local_; ++j) acc += x[hosts_[h][j]][g];
          v[h][i] = acc / l;
        }
      }
      OnebitStepResult res = onebitStep(shardLayout_, v, &groups_[k], OnebitArithmetic::kExact);
      for (size_t i = 0; i < shard_ && k * shard_ + i < count_; ++i) y[k * shard_ + i] = res.y[i];
    }
    return y;
  }

 private:
  std::vector<std::vector<int>> hosts_;
  size_t count_, padded_ = 0, shard_ = 0;
  int local_ = 1;
  OnebitLayout shardLayout_;
  std::vector<OnebitErrors> groups_;  // per local index: [host] buffers
  std::vector<int> hostIndex_, localRank_;
};

inline uint32_t storedBitsAt(const std::vector<uint8_t>& out, size_t i, obcclDataType_t dt) {
  uint32_t v = 0;
  std::memcpy(&v, &out[i * elemBytes(dt)], elemBytes(dt));
  return v;
}

// Index of the first element where a and b differ bitwise, -1 when equal.
inline long firstBitDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) return static_cast<long>(i);
  return -1;
}

// Empty when every rank succeeded, else the first failure.
inline std::string firstFailure(const std::vector<obcclResult_t>& rcs,
                                const std::vector<std::string>& msgs) {
  for (size_t r = 0; r < rcs.size(); ++r)
    if (rcs[r] != obcclSuccess) return "rank " + std::to_string(r) + ": " + msgs[r];
  return "";
}

}  // namespace obccl_test
