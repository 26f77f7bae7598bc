#include "util/log.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

namespace obccl {
namespace {

struct LogState {
  std::mutex mu;
  std::atomic<int> level{static_cast<int>(LogLevel::kWarn)};
  std::atomic<unsigned> subsys{kSubsysAll};
  LogHandler handler;
  FILE* file = stderr;
  std::string host;

  LogState() {
    if (const char* l = std::getenv("OBCCL_DEBUG")) level = static_cast<int>(parseLogLevel(l));
    if (const char* s = std::getenv("OBCCL_DEBUG_SUBSYS")) subsys = parseLogSubsys(s);
    char h[256] = {0};
    if (gethostname(h, sizeof(h) - 1) == 0) host = h;
    if (const char* f = std::getenv("OBCCL_DEBUG_FILE")) {
      // %h and %p expand to host and pid, as NCCL_DEBUG_FILE does, so ranks do not collide.
      std::string path;
      for (const char* p = f; *p; ++p) {
        if (p[0] == '%' && p[1] == 'h') {
          path += host;
          ++p;
        } else if (p[0] == '%' && p[1] == 'p') {
          path += std::to_string(getpid());
          ++p;
        } else {
          path += *p;
        }
      }
      if (FILE* opened = std::fopen(path.c_str(), "a")) file = opened;
    }
  }
};

LogState& state() {
  static LogState* s = new LogState();  // Never destroyed: logging may run during exit.
  return *s;
}

thread_local int tlsRank = -1;

const char* levelName(LogLevel l) {
  switch (l) {
    case LogLevel::kWarn:
      return "WARN";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kTrace:
      return "TRACE";
    default:
      return "";
  }
}

}  // namespace

bool logEnabled(LogLevel level, unsigned subsys) {
  LogState& s = state();
  return static_cast<int>(level) <= s.level.load(std::memory_order_relaxed) &&
         (s.subsys.load(std::memory_order_relaxed) & subsys) != 0;
}

void logWrite(LogLevel level, unsigned subsys, const char* fmt, ...) {
  LogState& s = state();
  char body[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof(body), fmt, ap);
  va_end(ap);
  std::ostringstream line;
  line << s.host << ':' << getpid() << ':' << static_cast<long>(syscall(SYS_gettid)) << " [";
  if (tlsRank >= 0)
    line << tlsRank;
  else
    line << '-';
  line << "] obccl " << levelName(level) << ' ' << body;
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.handler) {
    s.handler(level, subsys, line.str());
    return;
  }
  std::fprintf(s.file, "%s\n", line.str().c_str());
  std::fflush(s.file);
}

LogHandler setLogHandler(LogHandler handler) {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  std::swap(s.handler, handler);
  return handler;
}

void setLogLevel(LogLevel level) { state().level = static_cast<int>(level); }
void setLogRank(int rank) { tlsRank = rank; }
int logRank() { return tlsRank; }

LogLevel parseLogLevel(const std::string& s) {
  std::string u;
  for (char c : s) u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (u == "WARN") return LogLevel::kWarn;
  if (u == "INFO") return LogLevel::kInfo;
  if (u == "DEBUG") return LogLevel::kDebug;
  if (u == "TRACE") return LogLevel::kTrace;
  return LogLevel::kNone;
}

unsigned parseLogSubsys(const std::string& s) {
  static const struct {
    const char* name;
    unsigned bit;
  } kNames[] = {{"INIT", kSubsysInit},           {"COLL", kSubsysColl},
                {"TRANSPORT", kSubsysTransport}, {"NET", kSubsysTransport},
                {"BOOTSTRAP", kSubsysBootstrap}, {"TOPO", kSubsysTopo},
                {"CODEC", kSubsysCodec},         {"OPTIM", kSubsysOptim},
                {"DEVICE", kSubsysDevice},       {"ALL", kSubsysAll}};
  bool invert = !s.empty() && s[0] == '^';
  unsigned mask = 0;
  std::stringstream ss(invert ? s.substr(1) : s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    for (auto& c : item) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const auto& n : kNames)
      if (item == n.name) mask |= n.bit;
  }
  return invert ? ~mask : mask;
}

}  // namespace obccl
