#include "tools/obcclrun/output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace obccl::run {
namespace {

constexpr size_t kReadBytes = 64 * 1024;
// A rank that writes a very long line without a newline still gets it out, in pieces.
constexpr size_t kMaxPending = 1 << 20;

void writeAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // stdout closed: drop the output, keep the job running
    data += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

LineForwarder::LineForwarder(int fd, int destFd, std::string prefix)
    : fd_(fd), destFd_(destFd), prefix_(std::move(prefix)) {
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

LineForwarder::~LineForwarder() { close(); }

void LineForwarder::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void LineForwarder::emit(const char* data, size_t n) {
  std::string line = prefix_;
  line.append(data, n);
  writeAll(destFd_, line.data(), line.size());
}

void LineForwarder::readAvailable() {
  char buf[kReadBytes];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // EAGAIN: nothing more for now
    if (n == 0) {
      flush();
      return;
    }
    pending_.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1)
      emit(pending_.data() + start, nl + 1 - start);
    pending_.erase(0, start);
    if (pending_.size() >= kMaxPending) {
      pending_ += '\n';
      emit(pending_.data(), pending_.size());
      pending_.clear();
    }
  }
}

void LineForwarder::flush() {
  if (!pending_.empty()) {
    pending_ += '\n';
    emit(pending_.data(), pending_.size());
    pending_.clear();
  }
  close();
}

}  // namespace obccl::run
