// Logging: OBCCL_DEBUG=WARN|INFO|DEBUG|TRACE, OBCCL_DEBUG_SUBSYS=INIT,COLL,..., OBCCL_DEBUG_FILE.
// Each line starts "host:pid:tid [rank]". Tests can install a handler that receives every line.
#pragma once

#include <cstdarg>
#include <functional>
#include <string>

namespace obccl {

enum class LogLevel { kNone = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

enum LogSubsys : unsigned {
  kSubsysInit = 1u << 0,
  kSubsysColl = 1u << 1,
  kSubsysTransport = 1u << 2,
  kSubsysBootstrap = 1u << 3,
  kSubsysTopo = 1u << 4,
  kSubsysCodec = 1u << 5,
  kSubsysOptim = 1u << 6,
  kSubsysDevice = 1u << 7,
  kSubsysAll = ~0u,
};

using LogHandler = std::function<void(LogLevel, unsigned subsys, const std::string& line)>;

// True when a message of this level and subsystem would be written.
bool logEnabled(LogLevel level, unsigned subsys);
void logWrite(LogLevel level, unsigned subsys, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Replaces the sink (stderr or OBCCL_DEBUG_FILE); an empty handler restores it. Returns the old.
LogHandler setLogHandler(LogHandler handler);
// Forces the level, overriding OBCCL_DEBUG (used by tests and tools).
void setLogLevel(LogLevel level);
// The rank shown in this thread's log lines; -1 shows none.
void setLogRank(int rank);
int logRank();
// Parses "WARN", "INFO", ...; kNone for unknown.
LogLevel parseLogLevel(const std::string& s);
// Parses "INIT,COLL" or "^COLL" (all but) into a mask.
unsigned parseLogSubsys(const std::string& s);

}  // namespace obccl

#define OBCCL_LOG_(level, subsys, ...)                                                     \
  do {                                                                                     \
    if (::obccl::logEnabled(level, subsys)) ::obccl::logWrite(level, subsys, __VA_ARGS__); \
  } while (0)
#define OBCCL_WARN(subsys, ...) OBCCL_LOG_(::obccl::LogLevel::kWarn, subsys, __VA_ARGS__)
#define OBCCL_INFO(subsys, ...) OBCCL_LOG_(::obccl::LogLevel::kInfo, subsys, __VA_ARGS__)
#define OBCCL_DEBUG(subsys, ...) OBCCL_LOG_(::obccl::LogLevel::kDebug, subsys, __VA_ARGS__)
#define OBCCL_TRACE(subsys, ...) OBCCL_LOG_(::obccl::LogLevel::kTrace, subsys, __VA_ARGS__)
