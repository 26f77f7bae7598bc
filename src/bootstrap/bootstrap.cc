// A rank's connection to the root service: join, allgather rounds, barrier, abort.
#include "bootstrap/bootstrap.h"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "bootstrap/protocol.h"
#include "bootstrap/root_service.h"
#include "util/auth.h"
#include "util/log.h"

namespace obccl::bootstrap {
namespace {

class BootstrapClient final : public Bootstrap {
 public:
  BootstrapClient(UniqueFd fd, int rank, int nranks, SocketAddress root, SocketAddress local)
      : fd_(std::move(fd)),
        rank_(rank),
        nranks_(nranks),
        rootName_("bootstrap root at " + root.toString()),
        localKey_(local.toString()),
        local_(std::move(local)) {
    local_.setPort(0);
    noteLocalClient(localKey_, true);
  }
  ~BootstrapClient() override { noteLocalClient(localKey_, false); }

  Status join(const Deadline& deadline, const std::atomic<bool>* cancel);
  Status allgather(const std::vector<uint8_t>& mine, std::vector<std::vector<uint8_t>>* all,
                   const Deadline& deadline) override;
  Status barrier(const Deadline& deadline) override {
    std::vector<std::vector<uint8_t>> ignored;
    return allgather({}, &ignored, deadline).withContext("bootstrap barrier");
  }
  Status checkRoot() override;
  void reportFailure(const Status& failure, uint64_t seq) override;
  Status jobFailure(uint64_t* seq) override;
  int jobFailureFd() const override { return rootGone_ ? -1 : fd_.get(); }
  void abort() override;
  int rank() const override { return rank_; }
  int nranks() const override { return nranks_; }
  const SocketAddress& localAddress() const override { return local_; }

 private:
  // Reads the next message from the root; a kError message becomes its Status.
  Status readMessage(MsgType expected, uint64_t maxLength, MsgHeader* header,
                     std::vector<uint8_t>* payload, const Deadline& deadline);
  // Makes failures sticky, and reports an abort as such rather than as a lost connection.
  Status broken(Status s);

  UniqueFd fd_;
  int rank_, nranks_;
  std::string rootName_;
  std::string localKey_;  // host:port of this end of the root connection
  SocketAddress local_;
  std::atomic<bool> aborted_{false};
  Status error_;
  bool rootGone_ = false;     // after init: the root closed or broke; no more news from it
  Status jobError_;           // after init: what another rank reported
  uint64_t jobErrorSeq_ = 0;  // and in which operation
  uint64_t round_ = 0;
};

Status BootstrapClient::broken(Status s) {
  if (aborted_.load())
    s = remoteError("bootstrap on rank " + std::to_string(rank_) + " was aborted (obcclCommAbort)");
  if (error_.isOk()) error_ = s;
  return s;
}

void BootstrapClient::abort() {
  aborted_.store(true);
  // Wakes a poll() in another thread: reads see EOF at once. The fd stays open until the
  // destructor, so no other thread can be left holding a reused descriptor number.
  ::shutdown(fd_.get(), SHUT_RDWR);
}

Status BootstrapClient::readMessage(MsgType expected, uint64_t maxLength, MsgHeader* header,
                                    std::vector<uint8_t>* payload, const Deadline& deadline) {
  OBCCL_TRY(readFull(fd_.get(), header, sizeof(*header), deadline, rootName_));
  bool isError = header->type == static_cast<uint32_t>(MsgType::kError);
  if (header->magic != kMsgMagic || (!isError && header->type != static_cast<uint32_t>(expected)) ||
      header->length > (isError ? kMaxErrorBytes + 4 : maxLength))
    return remoteError("malformed message from " + rootName_);
  payload->resize(header->length);
  if (header->length > 0)
    OBCCL_TRY(readFull(fd_.get(), payload->data(), payload->size(), deadline, rootName_));
  if (isError) return parseErrorPayload(*payload);
  return Status::ok();
}

Status BootstrapClient::checkRoot() {
  if (!error_.isOk()) return error_;
  if (aborted_.load()) return broken(Status());
  pollfd pfd{fd_.get(), POLLIN, 0};
  if (::poll(&pfd, 1, 0) <= 0) return Status::ok();
  // Between rounds the root sends nothing but an error; EOF reads as a lost root.
  MsgHeader h;
  std::vector<uint8_t> payload;
  Status s = readMessage(MsgType::kError, 0, &h, &payload, Deadline::afterMs(1000));
  if (s.isOk()) s = remoteError("unexpected message from " + rootName_ + " between rounds");
  return broken(s);
}

void BootstrapClient::reportFailure(const Status& failure, uint64_t seq) {
  if (rootGone_ || aborted_.load() || !error_.isOk() || !jobError_.isOk()) return;
  std::string text = failure.message().substr(0, kMaxErrorBytes);
  std::vector<uint8_t> payload(4 + text.size());
  int32_t code = failure.code();
  std::memcpy(payload.data(), &code, 4);
  std::memcpy(payload.data() + 4, text.data(), text.size());
  std::vector<uint8_t> msg = makeMessage(MsgType::kJobFailed, seq, payload.data(), payload.size());
  if (!writeFull(fd_.get(), msg.data(), msg.size(), Deadline::afterMs(200), rootName_).isOk())
    rootGone_ = true;
}

Status BootstrapClient::jobFailure(uint64_t* seq) {
  while (jobError_.isOk() && !rootGone_ && !aborted_.load()) {
    pollfd pfd{fd_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 0) <= 0) break;
    MsgHeader h;
    Status s = readFull(fd_.get(), &h, sizeof(h), Deadline::afterMs(1000), rootName_);
    bool known = h.type == static_cast<uint32_t>(MsgType::kJobFailed) ||
                 h.type == static_cast<uint32_t>(MsgType::kError);
    if (!s.isOk() || h.magic != kMsgMagic || !known || h.length > kMaxErrorBytes + 4) {
      rootGone_ = true;  // closed, or a stream this rank cannot follow: no news from it
      break;
    }
    std::vector<uint8_t> payload(h.length);
    if (h.length > 0 &&
        !readFull(fd_.get(), payload.data(), payload.size(), Deadline::afterMs(1000), rootName_)
             .isOk()) {
      rootGone_ = true;
      break;
    }
    // kError after init is the root's note that some rank left; only kJobFailed fails the job.
    if (h.type == static_cast<uint32_t>(MsgType::kJobFailed)) {
      jobError_ = parseErrorPayload(payload);
      jobErrorSeq_ = h.seq;
    }
  }
  *seq = jobErrorSeq_;
  return jobError_;
}

Status BootstrapClient::join(const Deadline& deadline, const std::atomic<bool>* cancel) {
  JoinPayload j;
  j.rank = rank_;
  j.nranks = nranks_;
  std::vector<uint8_t> msg = makeMessage(MsgType::kJoin, 0, &j, sizeof(j));
  Status s = writeFull(fd_.get(), msg.data(), msg.size(), deadline, rootName_);
  if (!s.isOk()) return broken(s);
  // The welcome comes when the last rank joins, which may take long: wait in slices so that a
  // cancel request is seen.
  std::string waiting = "the other ranks to join " + rootName_;
  for (;;) {
    if (cancel != nullptr && cancel->load()) abort();
    Deadline slice = Deadline::earlier(deadline, Deadline::afterMs(100));
    s = waitReadable(fd_.get(), slice, waiting);
    if (s.isOk() || s.code() != obcclTimeout || deadline.expired()) break;
  }
  if (!s.isOk()) return broken(s);
  MsgHeader h;
  std::vector<uint8_t> payload;
  s = readMessage(MsgType::kWelcome, 0, &h, &payload, deadline);
  if (!s.isOk())
    return broken(s.withContext("joining as rank " + std::to_string(rank_) + " of " +
                                std::to_string(nranks_)));
  return Status::ok();
}

Status BootstrapClient::allgather(const std::vector<uint8_t>& mine,
                                  std::vector<std::vector<uint8_t>>* all,
                                  const Deadline& deadline) {
  if (!error_.isOk()) return error_;
  if (aborted_.load()) return broken(Status());
  if (mine.size() > kMaxContributionBytes)
    return invalidArgument("bootstrap allgather: " + std::to_string(mine.size()) +
                           " bytes exceed the limit of " + std::to_string(kMaxContributionBytes));
  std::string what = "bootstrap allgather round " + std::to_string(round_);
  std::vector<uint8_t> msg = makeMessage(MsgType::kContribute, round_, mine.data(), mine.size());
  Status s = writeFull(fd_.get(), msg.data(), msg.size(), deadline, rootName_);
  if (!s.isOk()) return broken(s.withContext(what));
  MsgHeader h;
  std::vector<uint8_t> payload;
  uint64_t maxLength = static_cast<uint64_t>(nranks_) * (8 + kMaxContributionBytes);
  s = readMessage(MsgType::kResult, maxLength, &h, &payload, deadline);
  if (!s.isOk()) return broken(s.withContext(what));
  // Payload: nranks lengths, then the contributions in rank order.
  size_t off = 8 * static_cast<size_t>(nranks_);
  if (h.seq != round_ || payload.size() < off)
    return broken(remoteError("malformed allgather result from " + rootName_));
  std::vector<std::vector<uint8_t>> parts(nranks_);
  for (int r = 0; r < nranks_; ++r) {
    uint64_t len = 0;
    std::memcpy(&len, payload.data() + 8 * r, 8);
    if (len > payload.size() - off)
      return broken(remoteError("malformed allgather result from " + rootName_));
    parts[r].assign(payload.begin() + off, payload.begin() + off + len);
    off += len;
  }
  ++round_;
  *all = std::move(parts);
  return Status::ok();
}

// connectTo in slices of 100 ms, so that a cancel request is seen while the root is not up.
Result<UniqueFd> connectCancellable(const SocketAddress& root, const Deadline& deadline,
                                    const std::atomic<bool>* cancel) {
  for (;;) {
    if (cancel != nullptr && cancel->load())
      return remoteError("bootstrap connect to " + root.toString() + " was aborted");
    Deadline slice = cancel ? Deadline::earlier(deadline, Deadline::afterMs(100)) : deadline;
    Result<UniqueFd> fd = connectTo(root, slice);
    if (fd.isOk() || fd.status().code() != obcclTimeout || deadline.expired()) return fd;
  }
}

}  // namespace

Result<std::unique_ptr<Bootstrap>> Bootstrap::connect(const UniqueIdData& id, int rank, int nranks,
                                                      const Deadline& deadline) {
  return connect(id, rank, nranks, deadline, nullptr);
}

Result<std::unique_ptr<Bootstrap>> Bootstrap::connect(const UniqueIdData& id, int rank, int nranks,
                                                      const Deadline& deadline,
                                                      const std::atomic<bool>* cancel) {
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return invalidArgument("rank " + std::to_string(rank) + " is not in 0.." +
                           std::to_string(nranks - 1) + " (nranks " + std::to_string(nranks) + ")");
  if (id.secret.empty()) return invalidArgument("bootstrap: the unique id has no secret");
  std::string rootName = "bootstrap root at " + id.root.toString();
  OBCCL_ASSIGN_OR_RETURN(UniqueFd fd, connectCancellable(id.root, deadline, cancel));
  AuthOptions ao;
  ao.purpose = kAuthPurpose;
  ao.commId = id.commId;
  ao.secret = id.secret;
  ao.role = AuthRole::kClient;
  ao.selfId = rank;
  ao.expectedPeerId = kRootAuthId;
  ao.peerName = rootName;
  Result<int64_t> peer = authenticatePeer(fd.get(), ao, deadline);
  if (!peer.isOk()) return peer.status();
  OBCCL_ASSIGN_OR_RETURN(SocketAddress local, localAddressOf(fd.get()));
  auto client = std::make_unique<BootstrapClient>(std::move(fd), rank, nranks, id.root, local);
  OBCCL_TRY(client->join(deadline, cancel));
  OBCCL_DEBUG(kSubsysBootstrap, "rank %d of %d joined %s from %s", rank, nranks, rootName.c_str(),
              local.host().c_str());
  return std::unique_ptr<Bootstrap>(std::move(client));
}

}  // namespace obccl::bootstrap
