#include "common/onebit_reference.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "obccl/obccl.h"
#include "util/half.h"

namespace obccl_test {
namespace {

using Range = std::pair<size_t, size_t>;  // [begin, end) of elements sharing one scale

// The scale groups: worker side with block 0 is the whole padded vector; otherwise blocks of
// `block` inside each chunk (the last one shorter), or whole chunks when block is 0.
std::vector<Range> scaleGroups(const OnebitLayout& l, bool worker) {
  if (worker && l.block == 0) return {{0, l.padded}};
  std::vector<Range> out;
  for (size_t j = 0; j < static_cast<size_t>(l.nranks); ++j) {
    size_t begin = j * l.chunk, end = begin + l.chunk;
    size_t step = l.block == 0 ? l.chunk : l.block;
    for (size_t b = begin; b < end; b += step) out.push_back({b, std::min(b + step, end)});
  }
  return out;
}

float sigma(float v) { return v < 0.0f ? -1.0f : 1.0f; }

// float(sqrt(sum of squares / count)) over v[begin, end).
float scaleOf(const std::vector<float>& v, Range g, OnebitArithmetic arithmetic) {
  double sum = 0.0;
  if (arithmetic == OnebitArithmetic::kExact) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = g.first; i < g.second; ++i) lane[i % 8] += double(v[i]) * double(v[i]);
    sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  } else {
    for (size_t i = g.first; i < g.second; ++i) sum += double(v[i]) * double(v[i]);
  }
  return static_cast<float>(std::sqrt(sum / double(g.second - g.first)));
}

}  // namespace

OnebitLayout onebitLayout(size_t count, int nranks, size_t block) {
  OnebitLayout l;
  l.count = count;
  l.nranks = nranks;
  l.block = block;
  size_t unit = 8 * static_cast<size_t>(nranks);
  l.padded = (count + unit - 1) / unit * unit;
  l.chunk = l.padded / static_cast<size_t>(nranks);
  return l;
}

OnebitErrors OnebitErrors::zero(const OnebitLayout& l) {
  OnebitErrors e;
  e.worker.assign(l.nranks, std::vector<float>(l.padded, 0.0f));
  e.server.assign(l.nranks, std::vector<float>(l.chunk, 0.0f));
  return e;
}

OnebitStepResult onebitStep(const OnebitLayout& l, const std::vector<std::vector<float>>& x,
                            OnebitErrors* errors, OnebitArithmetic arithmetic) {
  const int n = l.nranks;
  const size_t np = l.padded;
  // Worker: compensate, compress with per-group scales, keep the residual.
  std::vector<std::vector<float>> compressed(n, std::vector<float>(np));
  for (int r = 0; r < n; ++r) {
    std::vector<float>& e = errors->worker[r];
    std::vector<float> u(np);
    for (size_t i = 0; i < np; ++i) u[i] = i < l.count ? x[r][i] + e[i] : e[i];
    for (Range g : scaleGroups(l, true)) {
      float a = scaleOf(u, g, arithmetic);
      for (size_t i = g.first; i < g.second; ++i) {
        compressed[r][i] = a * sigma(u[i]);
        e[i] = u[i] - compressed[r][i];
      }
    }
  }
  // Server: average, add the server error, compress each chunk's groups.
  OnebitStepResult out;
  out.z.resize(np);
  out.zScale.resize(np);
  out.y.resize(np);
  for (size_t i = 0; i < np; ++i) {
    const std::vector<float>& s = errors->server[i / l.chunk];
    float sum = 0.0f, magnitude = 0.0f;
    for (int r = 0; r < n; ++r) {
      sum += compressed[r][i];
      magnitude += std::fabs(compressed[r][i]);
    }
    float avg = arithmetic == OnebitArithmetic::kExact ? sum * (1.0f / static_cast<float>(n))
                                                       : sum / static_cast<float>(n);
    out.z[i] = avg + s[i % l.chunk];
    out.zScale[i] = magnitude / static_cast<float>(n) + std::fabs(s[i % l.chunk]);
  }
  for (Range g : scaleGroups(l, false)) {
    float b = scaleOf(out.z, g, arithmetic);
    for (size_t i = g.first; i < g.second; ++i) {
      out.y[i] = b * sigma(out.z[i]);
      errors->server[i / l.chunk][i % l.chunk] = out.z[i] - out.y[i];
    }
  }
  return out;
}

uint32_t onebitEncode(float y, int datatype) {
  if (datatype == obcclFloat16) return obccl::floatToHalf(y);
  if (datatype == obcclBfloat16) return obccl::floatToBf16(y);
  uint32_t bits;
  std::memcpy(&bits, &y, 4);
  return bits;
}

}  // namespace obccl_test
