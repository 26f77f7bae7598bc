// RAII owners for the named objects of the shm transport: POSIX shared-memory segments and the
// FIFO doorbells in /dev/shm. Names are removed as soon as every peer has opened them, so a
// crash afterwards leaves nothing behind; the owner's destructor removes a name still present.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace obccl::transport::shm {

// Prefix of every name this transport creates (under /dev/shm); tests look for leftovers by it.
constexpr const char* kNamePrefix = "obccl-";

// "/obccl-<commId>-<pid>-<nonce>-<a>-<b>" (shm_open name) and the doorbell path in /dev/shm.
std::string segmentName(uint64_t commId, pid_t pid, uint64_t nonce, int lo, int hi);
std::string doorbellPath(uint64_t commId, pid_t pid, uint64_t nonce, int owner, int peer);

// Removes names that a process killed while connecting left in /dev/shm: those whose creator
// pid (part of the name) no longer exists and that are older than a minute (far longer than a
// connect keeps its names). Best effort: failures are ignored.
void removeStaleNames();

// A mapped POSIX shared-memory segment.
class ShmSegment {
 public:
  ShmSegment() = default;
  ShmSegment(ShmSegment&& other) noexcept { *this = std::move(other); }
  ShmSegment& operator=(ShmSegment&& other) noexcept;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;
  ~ShmSegment();

  // Creates (exclusively) and maps a zero-filled segment of `bytes`, reserving its memory up
  // front so that running out of /dev/shm is an error here instead of SIGBUS later.
  static Result<ShmSegment> create(const std::string& name, size_t bytes);
  // Opens and maps an existing segment (its size is taken from the object).
  static Result<ShmSegment> open(const std::string& name);

  // Removes the name (the mapping stays valid). Idempotent; only the creator unlinks.
  void unlink();
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void reset();
  void* data_ = nullptr;
  size_t size_ = 0;
  std::string name_;  // set while this object must still unlink the name
};

// One end of a FIFO used as a doorbell: the owner reads (and polls) it, the peer writes one byte
// to wake the owner. The peer opens it read-write so that a write never raises SIGPIPE; the
// owner's read end then sees end-of-file once the peer's process has closed it or died.
class Doorbell {
 public:
  Doorbell() = default;
  Doorbell(Doorbell&& other) noexcept { *this = std::move(other); }
  Doorbell& operator=(Doorbell&& other) noexcept;
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;
  ~Doorbell();

  // Makes the FIFO and opens its read end (non-blocking).
  static Result<Doorbell> create(const std::string& path);
  // Opens an existing FIFO for ringing (non-blocking).
  static Result<Doorbell> openForRinging(const std::string& path);

  void unlink();
  int fd() const { return fd_; }
  // Writes one byte; a full pipe already wakes the owner, so EAGAIN is not an error.
  void ring() const;
  // Reads every pending byte. Returns false when the pipe reports end-of-file (no writer left).
  bool drain() const;

 private:
  void reset();
  int fd_ = -1;
  std::string path_;  // set while this object must still unlink the path
};

}  // namespace obccl::transport::shm
