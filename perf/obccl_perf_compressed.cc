// The compressed allreduce's expected output, simulated locally for every rank from zeroed
// error buffers (DESIGN.md section 4), in double precision.
//
// Rank r's input is +-2^(r mod 16) with pseudo-random signs, so a server value
// (1/n) * sum_r a_r * sign is a sum of distinct powers of two (times one common factor) and is
// never close to zero for up to 16 ranks: the sign the library computes in fp32 cannot differ
// from ours by rounding. Elements are still compared with a relative tolerance because the
// scales are square roots computed in a different precision.
#include <cmath>
#include <vector>

#include "perf/obccl_perf_data.h"

namespace obccl::perf {
namespace {

// A fixed pseudo-random sign for (rank, i): splitmix64 of both.
double signOf(int rank, uint64_t i) {
  uint64_t z = i * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(rank) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (z & 1) ? 1.0 : -1.0;
}

double magnitudeOf(int rank) { return std::ldexp(1.0, rank % 16); }

double compressedTolerance(obcclDataType_t t) {
  switch (t) {
    case obcclFloat16:
      return 2e-3;
    case obcclBfloat16:
      return 1.6e-2;
    default:
      return 1e-4;
  }
}

}  // namespace

void fillCompressedInput(const Shape& s, obcclDataType_t t, int rank, void* send) {
  for (size_t i = 0; i < s.sendElems; ++i)
    storeElement(t, send, i, magnitudeOf(rank) * signOf(rank, i));
}

uint64_t countWrongCompressed(const Shape& s, obcclDataType_t t, int nranks, const void* recv) {
  const size_t n = static_cast<size_t>(nranks), count = s.count;
  if (count == 0) return 0;
  const size_t padded = (count + 8 * n - 1) / (8 * n) * (8 * n);
  const size_t chunk = padded / n;
  // Worker scales: |u| is 2^(r mod 16) on the count real elements and 0 on the padding.
  std::vector<double> a(n);
  for (size_t r = 0; r < n; ++r)
    a[r] = magnitudeOf(static_cast<int>(r)) * std::sqrt(static_cast<double>(count) / padded);
  auto workerSign = [&](size_t r, size_t i) {
    return i < count ? signOf(static_cast<int>(r), i) : 1.0;  // sigma(0) = +1 on the padding
  };
  uint64_t wrong = 0;
  std::vector<double> z(chunk);
  for (size_t j = 0; j < n; ++j) {
    double sumSq = 0;
    for (size_t k = 0; k < chunk; ++k) {
      double acc = 0;
      for (size_t r = 0; r < n; ++r) acc += a[r] * workerSign(r, j * chunk + k);
      z[k] = acc / static_cast<double>(n);
      sumSq += z[k] * z[k];
    }
    const double b = std::sqrt(sumSq / static_cast<double>(chunk));
    for (size_t k = 0; k < chunk && j * chunk + k < count; ++k) {
      double want = z[k] < 0 ? -b : b;
      double got = loadElement(t, recv, j * chunk + k);
      if (!(std::fabs(got - want) <= compressedTolerance(t) * std::fabs(want))) ++wrong;
    }
  }
  return wrong;
}

}  // namespace obccl::perf
