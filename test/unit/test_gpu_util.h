// Helpers of the GPU tests: skipping without a device, host <-> device copies, random data.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "device/device.h"
#include "util/half.h"

namespace obccl::device::testing {

// Why no device is usable, for GTEST_SKIP messages.
inline std::string noDeviceReason() {
  Result<int> count = deviceCount();
  if (!count.isOk()) return "no CUDA device: " + count.status().message();
  return "no CUDA device: cudaGetDeviceCount returned 0";
}

#define OBCCL_SKIP_WITHOUT_DEVICE()        \
  if (!::obccl::device::deviceAvailable()) \
  GTEST_SKIP() << ::obccl::device::testing::noDeviceReason()

#define OBCCL_ASSERT_OK(expr)                             \
  do {                                                    \
    ::obccl::Status obccl_st_ = (expr);                   \
    ASSERT_TRUE(obccl_st_.isOk()) << obccl_st_.message(); \
  } while (0)

// A device allocation of `bytes` plus 16 spare bytes, so that tests can shift pointers off
// 16-byte alignment; at(offset) is the (possibly misaligned) pointer a test uses.
struct DevMem {
  DeviceBuffer buf;
  size_t offset = 0;
  char* at() const { return static_cast<char*>(buf.data()) + offset; }
  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(at());
  }
};

inline DevMem devAlloc(size_t bytes, size_t offset = 0) {
  Result<DeviceBuffer> r = DeviceBuffer::allocate(bytes + 16);
  EXPECT_TRUE(r.isOk()) << r.status().message();
  DevMem m;
  if (r.isOk()) m.buf = std::move(r).value();
  m.offset = offset;
  return m;
}

template <class T>
DevMem upload(const std::vector<T>& host, size_t offset = 0) {
  DevMem m = devAlloc(host.size() * sizeof(T), offset);
  if (m.buf.data() != nullptr && !host.empty()) {
    Status st = copyAsync(m.at(), host.data(), host.size() * sizeof(T), nullptr);
    EXPECT_TRUE(st.isOk()) << st.message();
    st = streamSynchronize(nullptr);
    EXPECT_TRUE(st.isOk()) << st.message();
  }
  return m;
}

template <class T>
std::vector<T> download(const void* dev, size_t count) {
  std::vector<T> host(count);
  if (count > 0) {
    Status st = copyAsync(host.data(), dev, count * sizeof(T), nullptr);
    EXPECT_TRUE(st.isOk()) << st.message();
    st = streamSynchronize(nullptr);
    EXPECT_TRUE(st.isOk()) << st.message();
  }
  return host;
}

inline uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline uint64_t doubleBits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// Index of the first element whose bits differ, or -1.
template <class T>
long firstBitDifference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  }
  return -1;
}

// Normal values with some exact +0.0 and -0.0 (sigma(-0) = +1 must hold).
inline std::vector<float> randomFloats(size_t n, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = dist(rng);
    if (i % 97 == 5) v[i] = 0.0f;
    if (i % 89 == 7) v[i] = -0.0f;
  }
  return v;
}

// The bytes of x as `type` (fp32 as is; fp16/bf16 rounded to nearest even).
inline std::vector<uint8_t> encodeAs(const std::vector<float>& x, obcclDataType_t type) {
  size_t es = type == obcclFloat32 ? 4 : 2;
  std::vector<uint8_t> out(x.size() * es);
  for (size_t i = 0; i < x.size(); ++i) {
    if (type == obcclFloat32) {
      std::memcpy(&out[4 * i], &x[i], 4);
    } else {
      uint16_t h = type == obcclFloat16 ? floatToHalf(x[i]) : floatToBf16(x[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

inline size_t elemSize(obcclDataType_t type) { return type == obcclFloat32 ? 4 : 2; }

inline const char* typeName(obcclDataType_t type) {
  return type == obcclFloat32 ? "f32" : type == obcclFloat16 ? "f16" : "bf16";
}

}  // namespace obccl::device::testing
