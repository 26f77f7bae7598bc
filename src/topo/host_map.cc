// The rank -> host map: derivation from host ids, and the OBCCL_TOPO_FILE text format.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "topo/topology.h"
#include "util/log.h"
#include "util/params.h"

namespace obccl::topo {

int HostMap::maxLocalSize() const {
  size_t m = 0;
  for (const auto& r : hostRanks) m = std::max(m, r.size());
  return static_cast<int>(m);
}

int HostMap::minLocalSize() const {
  if (hostRanks.empty()) return 0;
  size_t m = hostRanks[0].size();
  for (const auto& r : hostRanks) m = std::min(m, r.size());
  return static_cast<int>(m);
}

std::vector<int> HostMap::ranksWithLocalRank(int local) const {
  std::vector<int> out;
  for (const auto& r : hostRanks)
    if (local >= 0 && local < static_cast<int>(r.size())) out.push_back(r[local]);
  return out;
}

HostMap makeHostMap(std::vector<std::string> hostOf) {
  HostMap m;
  m.hostOf = std::move(hostOf);
  std::map<std::string, int> index;
  for (const auto& h : m.hostOf) {
    auto [it, inserted] = index.emplace(h, static_cast<int>(m.hosts.size()));
    if (inserted) {
      m.hosts.push_back(h);
      m.hostRanks.emplace_back();
    }
    int host = it->second;
    m.hostIndex.push_back(host);
    m.localRank.push_back(static_cast<int>(m.hostRanks[host].size()));
    m.hostRanks[host].push_back(static_cast<int>(m.hostIndex.size()) - 1);
  }
  return m;
}

namespace {

// Parses "0,1,4-7" into ranks; each must be in [0, nranks).
Status parseRankList(const std::string& text, int nranks, std::vector<int>* out) {
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    size_t dash = item.find('-', 1);
    std::string lo = item.substr(0, dash);
    std::string hi = dash == std::string::npos ? lo : item.substr(dash + 1);
    auto a = parseInt64(lo, "rank");
    auto b = parseInt64(hi, "rank");
    if (!a.isOk() || !b.isOk() || a.value() < 0 || b.value() < a.value())
      return invalidArgument("bad rank list item '" + item + "' (expected r or r1-r2)");
    for (int64_t r = a.value(); r <= b.value(); ++r) {
      if (r >= nranks)
        return invalidArgument("rank " + std::to_string(r) + " is out of range (nranks " +
                               std::to_string(nranks) + ")");
      out->push_back(static_cast<int>(r));
    }
  }
  if (out->empty()) return invalidArgument("empty rank list");
  return Status::ok();
}

bool isDetailKeyword(const std::string& w) {
  return w == "numa" || w == "cpus" || w == "nic" || w == "gpu" || w == "hostid" || w == "detail";
}

// Applies one statement (already split into words) to hostOf.
Status applyStatement(const std::vector<std::string>& w, int nranks,
                      std::vector<std::string>* hostOf) {
  std::vector<int> ranks;
  std::string host;
  if (w[0] == "rank") {
    if (w.size() != 4 || w[2] != "host") return invalidArgument("expected 'rank <r> host <name>'");
    OBCCL_TRY(parseRankList(w[1], nranks, &ranks));
    if (ranks.size() != 1)
      return invalidArgument("'rank' takes a single rank; use 'host ... ranks'");
    host = w[3];
  } else if (w[0] == "host") {
    if (w.size() != 4 || w[2] != "ranks")
      return invalidArgument("expected 'host <name> ranks <list>'");
    OBCCL_TRY(parseRankList(w[3], nranks, &ranks));
    host = w[1];
  } else if (w[0] == "nranks") {
    if (w.size() != 2) return invalidArgument("expected 'nranks <n>'");
    auto n = parseInt64(w[1], "nranks");
    if (!n.isOk()) return invalidArgument("expected 'nranks <n>', got '" + w[1] + "'");
    if (n.value() != nranks)
      return invalidArgument("file describes " + w[1] + " ranks but the communicator has " +
                             std::to_string(nranks));
    return Status::ok();
  } else if (isDetailKeyword(w[0])) {
    return Status::ok();
  } else {
    return invalidArgument("unknown statement '" + w[0] + "' (expected rank, host or nranks)");
  }
  for (int r : ranks) {
    if (!(*hostOf)[r].empty())
      return invalidArgument("rank " + std::to_string(r) + " is named twice (hosts '" +
                             (*hostOf)[r] + "' and '" + host + "')");
    (*hostOf)[r] = host;
  }
  return Status::ok();
}

}  // namespace

Result<std::vector<std::string>> parseTopoText(const std::string& text, int nranks,
                                               const std::string& source) {
  std::vector<std::string> hostOf(nranks);
  std::stringstream lines(text);
  std::string line;
  int lineNo = 0;
  while (std::getline(lines, line)) {
    ++lineNo;
    line = line.substr(0, line.find('#'));
    std::stringstream words(line);
    std::vector<std::string> w;
    for (std::string word; words >> word;) w.push_back(word);
    if (w.empty()) continue;
    Status s = applyStatement(w, nranks, &hostOf);
    if (!s.isOk()) return s.withContext(source + ":" + std::to_string(lineNo));
  }
  for (int r = 0; r < nranks; ++r)
    if (hostOf[r].empty())
      return invalidArgument(source + ": rank " + std::to_string(r) + " (of " +
                             std::to_string(nranks) + ") is not given a host");
  return hostOf;
}

Result<std::vector<std::string>> loadTopoFile(const std::string& path, int nranks) {
  std::ifstream in(path);
  if (!in) return errnoStatus("OBCCL_TOPO_FILE: cannot open " + path, errno);
  std::stringstream text;
  text << in.rdbuf();
  return parseTopoText(text.str(), nranks, path);
}

Result<HostMap> buildHostMap(const std::vector<std::string>& gathered, const std::string& path) {
  if (path.empty()) return makeHostMap(gathered);
  OBCCL_ASSIGN_OR_RETURN(auto hostOf, loadTopoFile(path, static_cast<int>(gathered.size())));
  OBCCL_INFO(kSubsysTopo, "host map for %zu ranks loaded from %s", gathered.size(), path.c_str());
  return makeHostMap(std::move(hostOf));
}

Result<HostMap> buildHostMap(const std::vector<std::string>& gathered) {
  return buildHostMap(gathered, paramString("OBCCL_TOPO_FILE"));
}

std::string formatTopoText(const HostMap& map, const Topology* topo, int rank) {
  std::ostringstream out;
  out << "# obccl topology" << (rank >= 0 ? ", written by rank " + std::to_string(rank) : "")
      << "\nnranks " << map.nranks() << "\n";
  for (int r = 0; r < map.nranks(); ++r) out << "rank " << r << " host " << map.hostOf[r] << "\n";
  if (topo == nullptr) return out.str();
  std::istringstream text(topo->describe());
  for (std::string line; std::getline(text, line);) out << "detail " << line << "\n";
  return out.str();
}

namespace {

std::string expandPath(const std::string& pattern, int rank) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '%' || i + 1 == pattern.size()) {
      out += pattern[i];
      continue;
    }
    char c = pattern[++i];
    if (c == 'r')
      out += std::to_string(rank);
    else if (c == 'h')
      out += hostName();
    else if (c == 'p')
      out += std::to_string(getpid());
    else
      out += std::string("%") + c;
  }
  return out;
}

}  // namespace

Status dumpTopoFile(const std::string& path, const HostMap& map, const Topology* topo, int rank) {
  std::string file = expandPath(path, rank);
  std::ofstream out(file, std::ios::trunc);
  if (!out) return errnoStatus("OBCCL_TOPO_DUMP_FILE: cannot create " + file, errno);
  out << formatTopoText(map, topo, rank);
  out.close();
  if (!out) return errnoStatus("OBCCL_TOPO_DUMP_FILE: cannot write " + file, errno);
  return Status::ok();
}

Status dumpTopoIfRequested(const HostMap& map, const Topology* topo, int rank) {
  if (!paramIsSet("OBCCL_TOPO_DUMP_FILE")) return Status::ok();
  std::string path = paramString("OBCCL_TOPO_DUMP_FILE");
  // Without a per-rank pattern every rank would write the same file: rank 0 alone does.
  bool perRank = path.find("%r") != std::string::npos || path.find("%p") != std::string::npos ||
                 path.find("%h") != std::string::npos;
  if (!perRank && rank != 0) return Status::ok();
  if (topo != nullptr) return dumpTopoFile(path, map, topo, rank);
  OBCCL_ASSIGN_OR_RETURN(Topology detected, detectTopology());
  return dumpTopoFile(path, map, &detected, rank);
}

}  // namespace obccl::topo
