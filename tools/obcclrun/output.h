// Forwards one rank's output pipe to obcclrun's stdout or stderr, a whole line at a time with a
// "[rank] " prefix, so lines of different ranks never interleave mid-line.
#pragma once

#include <string>

namespace obccl::run {

class LineForwarder {
 public:
  // Takes ownership of `fd` (the read end of the rank's pipe).
  LineForwarder(int fd, int destFd, std::string prefix);
  LineForwarder(const LineForwarder&) = delete;
  LineForwarder& operator=(const LineForwarder&) = delete;
  ~LineForwarder();

  bool open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // Reads what is available without blocking and writes every complete line; closes on EOF.
  void readAvailable();
  // Writes a trailing partial line (with a newline added) and closes the pipe.
  void flush();

 private:
  void emit(const char* data, size_t n);
  void close();

  int fd_;
  int destFd_;
  std::string prefix_;
  std::string pending_;  // bytes after the last newline
};

}  // namespace obccl::run
