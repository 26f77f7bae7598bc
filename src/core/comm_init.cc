// Comm::init: bootstrap rendezvous, host ids, and per-peer transport selection.
#include <cstring>

#include "core/comm.h"
#include "core/progress.h"
#include "util/log.h"

#if OBCCL_CORE_HAVE_BOOTSTRAP
#include "bootstrap/bootstrap.h"
#endif

namespace obccl::core {

#if OBCCL_CORE_HAVE_BOOTSTRAP

// Connections close first: closing one may progress a worker shared with the others (UCX), which
// can still complete transfers into the scratch buffers destroyed with the later members.
Comm::~Comm() { connections_.clear(); }

void Comm::abortBootstrap() {
  if (bootstrap_) bootstrap_->abort();
}

void Comm::reportFailure(const Status& failure) {
  if (bootstrap_) bootstrap_->reportFailure(failure, seq_);
}

// A rank that failed a later operation than seq completed this one, as every other rank then
// did too: this one can still complete, and the next call fails with the report.
Status Comm::jobFailure(uint64_t seq) {
  if (!bootstrap_) return Status::ok();
  uint64_t at = 0;
  Status s = bootstrap_->jobFailure(&at);
  return s.isOk() || at > seq ? Status::ok() : s;
}

int Comm::jobFailureFd() const { return bootstrap_ ? bootstrap_->jobFailureFd() : -1; }

Status Comm::init(const bootstrap::UniqueIdData& id) {
  Deadline deadline = Deadline::afterMs(config_.timeoutMs);
  commId_ = id.commId;
  if (aborted()) return systemError("init aborted by obcclCommAbort");
  // aborted_ as the cancel flag: obcclCommAbort ends a connect that waits for missing ranks.
  OBCCL_ASSIGN_OR_RETURN(std::unique_ptr<bootstrap::Bootstrap> bs,
                         bootstrap::Bootstrap::connect(id, rank_, nranks_, deadline, &aborted_));
  {
    std::lock_guard<std::mutex> lock(bootstrapMu_);
    bootstrap_ = std::move(bs);
    if (aborted()) bootstrap_->abort();  // abort() ran while connect was still in progress
  }
  std::string host = topo::localHostId();
  std::vector<std::vector<uint8_t>> all;
  OBCCL_TRY(bootstrap_->allgather(std::vector<uint8_t>(host.begin(), host.end()), &all, deadline)
                .withContext("exchanging host ids"));
  std::vector<std::string> hostOf;
  for (const auto& h : all) hostOf.emplace_back(h.begin(), h.end());
  OBCCL_ASSIGN_OR_RETURN(hostMap_, topo::buildHostMap(hostOf, config_.topoFile));
  // OBCCL_TOPO_DUMP_FILE: write the map (and this host's detected topology) for inspection.
  OBCCL_TRY(topo::dumpTopoIfRequested(hostMap_, nullptr, rank_));
  OBCCL_TRY(selectTransports(id, deadline));
  // No rank leaves init before every rank has connected: one that dies while connecting is then
  // reported to the others by the root at once, and one that destroys its communicator right
  // after init is never taken for one that died while starting.
  OBCCL_TRY(bootstrap_->barrier(deadline).withContext("waiting for every rank to connect"));
  OBCCL_INFO(kSubsysInit, "communicator %016llx ready: rank %d of %d, %d host(s)",
             static_cast<unsigned long long>(commId_), rank_, nranks_, hostMap_.nhosts());
  return Status::ok();
}

Status Comm::selectTransports(const bootstrap::UniqueIdData& id, const Deadline& deadline) {
  transport::ConnectContext ctx;
  ctx.rank = rank_;
  ctx.nranks = nranks_;
  ctx.commId = commId_;
  ctx.secret = id.secret;
  ctx.deadline = deadline;
  ctx.hostOf = hostMap_.hostOf;
  ctx.ifname = config_.socketIfname;
  ctx.interrupted = [this]() -> Status {
    if (aborted()) return systemError("init aborted by obcclCommAbort");
    return bootstrap_->checkRoot();
  };
  ctx.allgather = [this, deadline](const std::vector<uint8_t>& mine,
                                   std::vector<uint8_t>* out) -> Status {
    std::vector<std::vector<uint8_t>> parts;
    OBCCL_TRY(bootstrap_->allgather(mine, &parts, deadline));
    out->clear();
    for (const auto& p : parts) out->insert(out->end(), p.begin(), p.end());
    return Status::ok();
  };
  connections_.clear();
  connections_.resize(nranks_);
  // assigned[q][p]: whether rank q already has a transport to p. canConnect depends only on the
  // context every rank shares, so each rank can tell which transports anyone still needs and all
  // ranks make the same sequence of collective connect calls.
  std::vector<std::vector<bool>> assigned(nranks_, std::vector<bool>(nranks_, false));
  for (int q = 0; q < nranks_; ++q) assigned[q][q] = true;
  std::string tried;
  for (const std::string& name : config_.transports) {
    std::unique_ptr<transport::Transport> t = transport::makeTransport(name);
    if (!t) {
      OBCCL_INFO(kSubsysInit, "transport %s is not built into this library; skipping",
                 name.c_str());
      continue;
    }
    tried += (tried.empty() ? "" : ", ") + name;
    bool anyone = false;
    std::vector<int> peers;
    for (int q = 0; q < nranks_; ++q) {
      transport::ConnectContext view = ctx;
      view.rank = q;
      for (int p = 0; p < nranks_; ++p) {
        if (assigned[q][p] || !t->canConnect(view, p)) continue;
        anyone = true;
        assigned[q][p] = true;
        if (q == rank_) peers.push_back(p);
      }
    }
    if (!anyone) continue;
    std::vector<std::unique_ptr<transport::Connection>> out;
    OBCCL_TRY(t->connect(ctx, peers, &out).withContext("connecting over " + name));
    if (out.size() != peers.size())
      return internalError("transport " + name + " returned " + std::to_string(out.size()) +
                           " connections for " + std::to_string(peers.size()) + " peers");
    for (size_t i = 0; i < peers.size(); ++i) {
      OBCCL_INFO(kSubsysInit, "rank %d -> rank %d via %s (%s)", rank_, peers[i], name.c_str(),
                 out[i]->describe().c_str());
      connections_[peers[i]] = std::move(out[i]);
      transportOf_[peers[i]] = name;
    }
    transports_.push_back(std::move(t));
  }
  for (int p = 0; p < nranks_; ++p)
    if (p != rank_ && !connections_[p])
      return invalidArgument("no transport can reach rank " + std::to_string(p) +
                             " (tried: " + (tried.empty() ? std::string("none built") : tried) +
                             "); check OBCCL_TRANSPORTS / config->transports");
  return Status::ok();
}

#else  // no bootstrap layer in this build yet

Comm::~Comm() { connections_.clear(); }
void Comm::abortBootstrap() {}
void Comm::reportFailure(const Status&) {}
Status Comm::jobFailure(uint64_t) { return Status::ok(); }
int Comm::jobFailureFd() const { return -1; }
Status Comm::init(const bootstrap::UniqueIdData&) {
  return internalError("this build has no bootstrap layer");
}

#endif

}  // namespace obccl::core
