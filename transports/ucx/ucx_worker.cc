#include "transports/ucx/ucx_worker.h"

#include <algorithm>
#include <cstdlib>

#include "util/log.h"

namespace obccl::transport::ucx {
namespace {

// Bounds on one progress pass, so progress() stays short under a flood of events.
constexpr int kDrainCalls = 64;
constexpr int kArmRounds = 4;
constexpr char kTcpRxSegSize[] = "512K";

struct ConfigDeleter {
  void operator()(ucp_config_t* config) const { ucp_config_release(config); }
};

}  // namespace

std::string ucsMessage(ucs_status_t status) {
  return std::string(ucs_status_string(status)) + " (ucs status " +
         std::to_string(static_cast<int>(status)) + ")";
}

Result<std::shared_ptr<UcxContext>> UcxContext::create(int estimatedEps, bool wakeup) {
  ucp_config_t* rawConfig = nullptr;
  // NULL env prefix: UCX reads the plain UCX_* variables, so UCX_TLS and friends pass through.
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &rawConfig);
  if (st != UCS_OK) return systemError("ucp_config_read failed: " + ucsMessage(st));
  std::unique_ptr<ucp_config_t, ConfigDeleter> config(rawConfig);
  // UCX's tcp transport moves rendezvous data in receive segments of 64 KiB by default; larger
  // ones cut the system calls per byte several-fold and bring it close to plain TCP. Only a
  // default: UCX_TCP_RX_SEG_SIZE in the environment wins.
  if (std::getenv("UCX_TCP_RX_SEG_SIZE") == nullptr) {
    st = ucp_config_modify(config.get(), "RX_SEG_SIZE", kTcpRxSegSize);
    if (st != UCS_OK) {
      OBCCL_DEBUG(kSubsysTransport, "ucx: cannot set TCP_RX_SEG_SIZE: %s", ucs_status_string(st));
    }
  }

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS |
                      UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_TAG | (wakeup ? UCP_FEATURE_WAKEUP : 0);
  params.estimated_num_eps = static_cast<size_t>(std::max(estimatedEps, 1));
  params.mt_workers_shared = 0;
  params.name = "obccl";
  ucp_context_h context = nullptr;
  st = ucp_init(&params, config.get(), &context);
  if (st != UCS_OK && wakeup) {
    // Some transport sets cannot wake a sleeping thread; progress then works by polling only.
    OBCCL_INFO(kSubsysTransport, "ucx: no transport supports wake-up (%s); polling instead",
               ucs_status_string(st));
    return create(estimatedEps, false);
  }
  if (st != UCS_OK) {
    return systemError("ucp_init failed: " + ucsMessage(st) +
                       " (check UCX_TLS / UCX_NET_DEVICES; `ucx_info -d` lists transports)");
  }
  return std::shared_ptr<UcxContext>(new UcxContext(context, wakeup));
}

UcxContext::~UcxContext() { ucp_cleanup(context_); }

Result<std::shared_ptr<UcxWorker>> UcxWorker::create(std::shared_ptr<UcxContext> context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_NAME;
  // A communicator is driven by one thread at a time, not always the same one.
  params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  params.name = "obccl";
  ucp_worker_h raw = nullptr;
  ucs_status_t st = ucp_worker_create(context->get(), &params, &raw);
  if (st != UCS_OK) return systemError("ucp_worker_create failed: " + ucsMessage(st));
  std::shared_ptr<UcxWorker> worker(new UcxWorker(context, raw));

  ucp_address_t* addr = nullptr;
  size_t addrLen = 0;
  st = ucp_worker_get_address(raw, &addr, &addrLen);
  if (st != UCS_OK) return systemError("ucp_worker_get_address failed: " + ucsMessage(st));
  // Keep a copy and give UCX's buffer back at once, so no path can leak it.
  const auto* bytes = reinterpret_cast<const uint8_t*>(addr);
  worker->address_.assign(bytes, bytes + addrLen);
  ucp_worker_release_address(raw, addr);

  if (context->wakeup()) {
    int fd = -1;
    st = ucp_worker_get_efd(raw, &fd);
    if (st == UCS_OK) {
      worker->eventFd_ = fd;
    } else {
      OBCCL_INFO(kSubsysTransport, "ucx: ucp_worker_get_efd failed (%s); polling instead",
                 ucs_status_string(st));
    }
  }
  return worker;
}

UcxWorker::~UcxWorker() {
  // Pending closes go back to UCX, and ucp_worker_destroy ends them (and any endpoint left);
  // the goodbye buffers are freed only after that, since a pending send still points at them.
  for (auto& c : closing_) {
    // A receive nobody completes would stay out of UCX's request pool: cancel it for real.
    c->recv.cancel(worker_);
    c->recv.poll();
    c->send.release();
    c->close.release();
    c->recv.release();
  }
  ucp_worker_destroy(worker_);
  closing_.clear();
}

void UcxWorker::adoptClosing(std::unique_ptr<Closing> closing) {
  closing_.push_back(std::move(closing));
}

void UcxWorker::attach(WorkerClient* client) { clients_.push_back(client); }

void UcxWorker::detach(WorkerClient* client) {
  clients_.erase(std::remove(clients_.begin(), clients_.end(), client), clients_.end());
}

ucp_err_handler_t UcxWorker::errorHandler() {
  ucp_err_handler_t handler{};
  handler.cb = &UcxWorker::onError;
  handler.arg = this;
  return handler;
}

void UcxWorker::onError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* self = static_cast<UcxWorker*>(arg);
  for (WorkerClient* c : self->clients_) {
    if (c->endpoint() == ep) {
      c->onEndpointError(status);
      return;
    }
  }
}

bool UcxWorker::anyPending() const {
  for (const WorkerClient* c : clients_) {
    if (c->hasPendingOps()) return true;
  }
  return false;
}

void UcxWorker::drain() {
  for (int i = 0; i < kDrainCalls && ucp_worker_progress(worker_) != 0; ++i) {
  }
}

void UcxWorker::reapClosing() {
  closing_.erase(std::remove_if(closing_.begin(), closing_.end(),
                                [](const std::unique_ptr<Closing>& c) {
                                  bool sent = c->send.poll();
                                  bool heard = c->recv.poll();
                                  return c->close.poll() && sent && heard;
                                }),
                 closing_.end());
}

void UcxWorker::progress() {
  for (int round = 0; round < kArmRounds; ++round) {
    drain();
    if (!closing_.empty()) reapClosing();
    // Completions of every connection are processed here, not only the caller's: the drain may
    // have finished another connection's request, and its owner will poll the shared fd next.
    for (size_t i = 0; i < clients_.size(); ++i) clients_[i]->processOps();
    if (eventFd_ < 0 || !anyPending()) return;
    ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_OK) return;  // the fd now signals the next event
    if (st != UCS_ERR_BUSY) {
      if (!armFailedLogged_) {
        OBCCL_WARN(kSubsysTransport, "ucx: ucp_worker_arm failed: %s", ucsMessage(st).c_str());
        armFailedLogged_ = true;
      }
      break;
    }
    // UCS_ERR_BUSY: events arrived while arming; drain them and try again.
  }
  // Could not arm: make the fd readable so a caller that polls it comes straight back.
  ucp_worker_signal(worker_);
}

}  // namespace obccl::transport::ucx
