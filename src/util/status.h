// Status and Result<T>: expected failures as values, with a message that names the cause.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "obccl/obccl.h"

namespace obccl {

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(obcclResult_t code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool isOk() const { return code_ == obcclSuccess; }
  obcclResult_t code() const { return code_; }
  const std::string& message() const { return message_; }
  // Prefixes context ("allreduce seq 4: ") to the message, keeping the code.
  Status withContext(const std::string& context) const {
    return isOk() ? *this : Status(code_, context + ": " + message_);
  }

 private:
  obcclResult_t code_ = obcclSuccess;
  std::string message_;
};

inline Status invalidArgument(std::string m) { return Status(obcclInvalidArgument, std::move(m)); }
inline Status invalidUsage(std::string m) { return Status(obcclInvalidUsage, std::move(m)); }
inline Status systemError(std::string m) { return Status(obcclSystemError, std::move(m)); }
inline Status internalError(std::string m) { return Status(obcclInternalError, std::move(m)); }
inline Status remoteError(std::string m) { return Status(obcclRemoteError, std::move(m)); }
inline Status timeoutError(std::string m) { return Status(obcclTimeout, std::move(m)); }
// A Status from errno, e.g. errnoStatus("connect to 198.18.0.2:4000").
Status errnoStatus(const std::string& what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design

  bool isOk() const { return status_.isOk(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  T&& value() && { return std::move(*value_); }
  const T& value() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace obccl

#define OBCCL_CONCAT_INNER_(a, b) a##b
#define OBCCL_CONCAT_(a, b) OBCCL_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function unless it is ok.
#define OBCCL_TRY(expr)                                      \
  do {                                                       \
    ::obccl::Status obccl_try_status_ = (expr);              \
    if (!obccl_try_status_.isOk()) return obccl_try_status_; \
  } while (0)

// Evaluates a Result<T> expression; on success assigns its value to `lhs`, else returns the Status.
#define OBCCL_ASSIGN_OR_RETURN(lhs, expr) \
  OBCCL_ASSIGN_OR_RETURN_IMPL_(OBCCL_CONCAT_(obccl_result_, __LINE__), lhs, expr)
#define OBCCL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.isOk()) return tmp.status();              \
  lhs = std::move(tmp).value()
