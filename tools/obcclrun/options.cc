// Command-line parsing for obcclrun.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

#include "tools/obcclrun/launcher.h"

namespace obccl::run {
namespace {

Result<double> parseSeconds(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || *end != '\0' || !std::isfinite(v) || v < 0)
    return invalidArgument(what + ": '" + text + "' is not a number of seconds >= 0");
  return v;
}

Result<int> parseRanks(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || *end != '\0' || v < 1 || v > kMaxRanks)
    return invalidArgument("-n: '" + text + "' is not a rank count between 1 and " +
                           std::to_string(kMaxRanks));
  return static_cast<int>(v);
}

// Splits "--name=value" into name and value; returns false for other arguments.
bool splitInline(const std::string& arg, std::string* name, std::string* value) {
  auto eq = arg.find('=');
  if (arg.rfind("--", 0) != 0 || eq == std::string::npos) return false;
  *name = arg.substr(0, eq);
  *value = arg.substr(eq + 1);
  return true;
}

}  // namespace

const char* usageText() {
  return "usage: obcclrun -n N [options] [--] program [args...]\n"
         "\n"
         "Starts N ranks of program on this machine. Each rank gets OBCCL_RANK,\n"
         "OBCCL_WORLD_SIZE, OBCCL_LOCAL_RANK, OBCCL_LOCAL_SIZE, OBCCL_ROOT (127.0.0.1 and a\n"
         "free port) and a fresh random OBCCL_SECRET, as obcclCommInitFromEnv reads them;\n"
         "OBCCL_SOCKET_IFNAME defaults to lo. Ranks read stdin from /dev/null.\n"
         "\n"
         "  -n, --np N        number of ranks (1..4096)\n"
         "  --timeout S       stop the job after S seconds and exit with status 124\n"
         "  --grace S         seconds between SIGTERM and SIGKILL when stopping ranks (5)\n"
         "  --tag-output      prefix each line of output with [rank]\n"
         "  -v, --verbose     print the job's settings and how each rank ended\n"
         "  -h, --help        this text\n"
         "\n"
         "SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to every rank.\n"
         "When a rank exits non-zero or is killed, the others get SIGTERM (then SIGKILL after\n"
         "the grace period) and obcclrun exits with that rank's status (128+N for signal N).\n";
}

Result<Options> parseOptions(int argc, char** argv, bool* help) {
  Options o;
  *help = false;
  int i = 1;
  auto needValue = [&](const std::string& name) -> Result<std::string> {
    if (i + 1 >= argc) return invalidArgument(name + " needs a value");
    return std::string(argv[++i]);
  };
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    std::string name = arg, value;
    bool inlineValue = splitInline(arg, &name, &value);
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.empty() || arg[0] != '-') break;  // the program starts here
    if (arg == "-h" || arg == "--help") {
      *help = true;
      return Options();
    }
    if (arg == "--tag-output") {
      o.tagOutput = true;
    } else if (arg == "-v" || arg == "--verbose") {
      o.verbose = true;
    } else if (name == "-n" || name == "-np" || name == "--np") {
      if (!inlineValue) {
        OBCCL_ASSIGN_OR_RETURN(value, needValue(name));
      }
      OBCCL_ASSIGN_OR_RETURN(o.nranks, parseRanks(value));
    } else if (name == "--timeout" || name == "--grace") {
      if (!inlineValue) {
        OBCCL_ASSIGN_OR_RETURN(value, needValue(name));
      }
      OBCCL_ASSIGN_OR_RETURN(double s, parseSeconds(value, name));
      (name == "--timeout" ? o.timeoutSec : o.graceSec) = s;
    } else {
      return invalidArgument("unknown option '" + arg + "' (see obcclrun --help)");
    }
  }
  for (; i < argc; ++i) o.command.push_back(argv[i]);
  if (o.nranks == 0) return invalidArgument("the number of ranks is missing: -n N");
  if (o.command.empty()) return invalidArgument("no program to run");
  return o;
}

}  // namespace obccl::run
