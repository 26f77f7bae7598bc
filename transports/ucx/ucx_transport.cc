#include "transports/ucx/ucx_transport.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include "transports/ucx/ucx_connection.h"
#include "transports/ucx/ucx_tags.h"
#include "transports/ucx/ucx_worker.h"
#include "util/log.h"

namespace obccl::transport {
namespace {

// A packed worker address is a few hundred bytes (a few KiB with many NICs); anything far past
// that is a garbled exchange, not an address.
constexpr uint64_t kMaxAddressBytes = 1 << 20;
constexpr int kHandshakePollMs = 100;

using ucx::UcxConnection;

Status waitForHandshakes(ucx::UcxWorker* worker,
                         const std::vector<std::unique_ptr<UcxConnection>>& conns,
                         const Deadline& deadline) {
  for (;;) {
    worker->progress();
    std::string missing;
    for (const auto& c : conns) {
      if (!c->helloDone()) missing += (missing.empty() ? "" : ", ") + std::to_string(c->peer());
    }
    if (missing.empty()) break;
    if (deadline.expired()) {
      return timeoutError("ucx: no handshake from rank(s) " + missing +
                          " before the connect deadline (are they running, and can UCX reach "
                          "them? try UCX_LOG_LEVEL=info)");
    }
    int fd = worker->eventFd();
    if (fd < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, deadline.remainingMs(kHandshakePollMs)) < 0 && errno != EINTR) {
      return errnoStatus("ucx: poll on the worker's event fd", errno);
    }
  }
  for (const auto& c : conns) OBCCL_TRY(c->helloStatus());
  return Status::ok();
}

}  // namespace

UcxTransport::UcxTransport() = default;
UcxTransport::~UcxTransport() = default;

bool UcxTransport::canConnect(const ConnectContext& ctx, int peer) const {
  return peer >= 0 && peer < ctx.nranks && peer != ctx.rank;
}

Status UcxTransport::ensureWorker(int nranks) {
  if (worker_) return Status::ok();
  OBCCL_ASSIGN_OR_RETURN(auto context, ucx::UcxContext::create(nranks, /*wakeup=*/true));
  OBCCL_ASSIGN_OR_RETURN(worker_, ucx::UcxWorker::create(std::move(context)));
  return Status::ok();
}

Status UcxTransport::exchangeAddresses(const ConnectContext& ctx, bool haveWorker,
                                       std::vector<std::vector<uint8_t>>* addresses) {
  // The bootstrap allgather wants equal lengths: first the lengths, then addresses padded to
  // the longest. A rank without a worker sends length 0 and still takes part.
  uint64_t myLen = haveWorker ? worker_->address().size() : 0;
  std::vector<uint8_t> mine(sizeof(myLen));
  std::memcpy(mine.data(), &myLen, sizeof(myLen));
  std::vector<uint8_t> all;
  OBCCL_TRY(ctx.allgather(mine, &all));
  size_t n = static_cast<size_t>(ctx.nranks);
  if (all.size() != n * sizeof(uint64_t)) {
    return internalError("ucx: address-length allgather returned " + std::to_string(all.size()) +
                         " bytes for " + std::to_string(n) + " ranks");
  }
  std::vector<uint64_t> lens(n);
  std::memcpy(lens.data(), all.data(), all.size());
  uint64_t maxLen = *std::max_element(lens.begin(), lens.end());
  if (maxLen > kMaxAddressBytes) {
    return remoteError("ucx: a rank announced a " + std::to_string(maxLen) +
                       "-byte worker address; the address exchange is garbled");
  }
  addresses->assign(n, {});
  if (maxLen == 0) return Status::ok();  // every rank sees this, so all skip the next step
  mine.assign(maxLen, 0);
  if (haveWorker) std::copy(worker_->address().begin(), worker_->address().end(), mine.begin());
  OBCCL_TRY(ctx.allgather(mine, &all));
  if (all.size() != n * maxLen) {
    return internalError("ucx: address allgather returned " + std::to_string(all.size()) +
                         " bytes, expected " + std::to_string(n * maxLen));
  }
  for (size_t r = 0; r < n; ++r) {
    auto first = all.begin() + static_cast<ptrdiff_t>(r * maxLen);
    (*addresses)[r].assign(first, first + static_cast<ptrdiff_t>(lens[r]));
  }
  return Status::ok();
}

Status UcxTransport::connect(const ConnectContext& ctx, const std::vector<int>& peers,
                             std::vector<std::unique_ptr<Connection>>* out) {
  out->clear();
  std::set<int> seen;
  for (int p : peers) {
    if (!canConnect(ctx, p) || !seen.insert(p).second) {
      return invalidArgument("ucx: cannot connect rank " + std::to_string(ctx.rank) + " of " +
                             std::to_string(ctx.nranks) + " to peer " + std::to_string(p));
    }
  }
  // Peer sets are symmetric, so a rank with no UCX peers is nobody's UCX peer: it skips UCX
  // entirely (a one-host job never starts it) and only takes part in the allgathers.
  Status local = peers.empty() ? Status::ok() : ensureWorker(ctx.nranks);
  if (!local.isOk()) OBCCL_WARN(kSubsysTransport, "%s", local.message().c_str());
  std::vector<std::vector<uint8_t>> addresses;
  OBCCL_TRY(exchangeAddresses(ctx, local.isOk() && worker_ != nullptr, &addresses));
  OBCCL_TRY(local);
  uint32_t epoch = epoch_++;

  std::vector<std::unique_ptr<UcxConnection>> conns;
  for (int p : peers) {
    if (addresses[static_cast<size_t>(p)].empty()) {
      return remoteError("ucx: rank " + std::to_string(p) +
                         " has no UCX worker (its UCX initialisation failed, see its log, or it "
                         "did not list rank " +
                         std::to_string(ctx.rank) + " as a UCX peer)");
    }
    ucx::UcxPeerParams params;
    params.worker = worker_;
    params.rank = ctx.rank;
    params.peer = p;
    params.commId = ctx.commId;
    params.sendKey = ucx::deriveTagKey(ctx.secret, ctx.commId, epoch, ctx.rank, p);
    params.recvKey = ucx::deriveTagKey(ctx.secret, ctx.commId, epoch, p, ctx.rank);
    OBCCL_ASSIGN_OR_RETURN(auto conn,
                           UcxConnection::create(params, addresses[static_cast<size_t>(p)]));
    conns.push_back(std::move(conn));
  }
  if (conns.empty()) return Status::ok();
  OBCCL_TRY(waitForHandshakes(worker_.get(), conns, ctx.deadline));
  for (auto& c : conns) {
    c->describeLanes();
    OBCCL_INFO(kSubsysTransport, "rank %d: %s", ctx.rank, c->describe().c_str());
    out->push_back(std::move(c));
  }
  return Status::ok();
}

std::unique_ptr<Transport> makeUcxTransport() { return std::make_unique<UcxTransport>(); }

}  // namespace obccl::transport
