#include "transports/shm/shm_segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "util/log.h"

namespace obccl::transport::shm {

std::string segmentName(uint64_t commId, pid_t pid, uint64_t nonce, int lo, int hi) {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "/%s%016" PRIx64 "-%d-%08" PRIx64 "-%d-%d", kNamePrefix, commId,
                static_cast<int>(pid), nonce, lo, hi);
  return buf;
}

std::string doorbellPath(uint64_t commId, pid_t pid, uint64_t nonce, int owner, int peer) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "/dev/shm/%s%016" PRIx64 "-%d-%08" PRIx64 "-%d-%d.bell",
                kNamePrefix, commId, static_cast<int>(pid), nonce, owner, peer);
  return buf;
}

void removeStaleNames() {
  constexpr time_t kStaleSeconds = 60;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return;
  time_t now = ::time(nullptr);
  while (dirent* e = ::readdir(dir)) {
    char commId[17];
    int pid = 0;
    std::string format = std::string(kNamePrefix) + "%16[0-9a-f]-%d-";
    if (std::sscanf(e->d_name, format.c_str(), commId, &pid) != 2 || pid <= 0) continue;
    std::string path = std::string("/dev/shm/") + e->d_name;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || now - st.st_mtime < kStaleSeconds) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
    if (::unlink(path.c_str()) == 0)
      OBCCL_INFO(kSubsysTransport, "shm: removed %s, left by dead process %d", path.c_str(), pid);
  }
  ::closedir(dir);
}

namespace {

// Closes an fd on scope exit (the mapping outlives it).
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

ShmSegment& ShmSegment::operator=(ShmSegment&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    size_ = other.size_;
    name_ = std::move(other.name_);
    other.data_ = nullptr;
    other.size_ = 0;
    other.name_.clear();
  }
  return *this;
}

ShmSegment::~ShmSegment() { reset(); }

void ShmSegment::reset() {
  unlink();
  if (data_ != nullptr && ::munmap(data_, size_) != 0)
    OBCCL_WARN(kSubsysTransport, "shm: munmap of %zu bytes failed: %s", size_,
               std::strerror(errno));
  data_ = nullptr;
  size_ = 0;
}

void ShmSegment::unlink() {
  if (name_.empty()) return;
  if (::shm_unlink(name_.c_str()) != 0 && errno != ENOENT)
    OBCCL_WARN(kSubsysTransport, "shm: shm_unlink(%s) failed: %s", name_.c_str(),
               std::strerror(errno));
  name_.clear();
}

Result<ShmSegment> ShmSegment::create(const std::string& name, size_t bytes) {
  int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return errnoStatus("shm: shm_open(" + name + ", O_CREAT|O_EXCL)", errno);
  FdCloser closer{fd};
  ShmSegment seg;
  seg.name_ = name;  // from here on the destructor removes the name
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    return errnoStatus("shm: ftruncate(" + name + ", " + std::to_string(bytes) + ")", errno);
  if (int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); err != 0)
    return errnoStatus("shm: cannot reserve " + std::to_string(bytes) + " bytes for " + name +
                           " (is /dev/shm large enough? see OBCCL_SHM_RING_BYTES)",
                       err);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errnoStatus("shm: mmap(" + name + ")", errno);
  seg.data_ = p;
  seg.size_ = bytes;
  return seg;
}

Result<ShmSegment> ShmSegment::open(const std::string& name) {
  int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) return errnoStatus("shm: shm_open(" + name + ")", errno);
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errnoStatus("shm: fstat(" + name + ")", errno);
  size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes == 0) return systemError("shm: segment " + name + " is empty");
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errnoStatus("shm: mmap(" + name + ")", errno);
  ShmSegment seg;
  seg.data_ = p;
  seg.size_ = bytes;
  return seg;
}

Doorbell& Doorbell::operator=(Doorbell&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
    other.path_.clear();
  }
  return *this;
}

Doorbell::~Doorbell() { reset(); }

void Doorbell::reset() {
  unlink();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Doorbell::unlink() {
  if (path_.empty()) return;
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
    OBCCL_WARN(kSubsysTransport, "shm: unlink(%s) failed: %s", path_.c_str(), std::strerror(errno));
  path_.clear();
}

Result<Doorbell> Doorbell::create(const std::string& path) {
  if (::mkfifo(path.c_str(), 0600) != 0) return errnoStatus("shm: mkfifo(" + path + ")", errno);
  Doorbell bell;
  bell.path_ = path;
  bell.fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (bell.fd_ < 0) return errnoStatus("shm: open(" + path + ") for reading", errno);
  return bell;
}

Result<Doorbell> Doorbell::openForRinging(const std::string& path) {
  Doorbell bell;
  bell.fd_ = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (bell.fd_ < 0) return errnoStatus("shm: open(" + path + ") for writing", errno);
  return bell;
}

void Doorbell::ring() const {
  const char byte = 1;
  ssize_t n;
  do {
    n = ::write(fd_, &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN)
    OBCCL_WARN(kSubsysTransport, "shm: doorbell write failed: %s", std::strerror(errno));
}

bool Doorbell::drain() const {
  char buf[64];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n > 0) continue;
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return true;  // EAGAIN: empty, writer still there
  }
}

}  // namespace obccl::transport::shm
