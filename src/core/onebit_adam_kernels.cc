#include "core/onebit_adam_kernels.h"

#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#define OBCCL_OPTIM_SSE2 1
#endif

// The default build (-O2) does not auto-vectorize loops of unknown length, and sqrtf blocks it
// while errno is honoured, so the x86-64 bodies are written with SSE2 (part of the baseline ABI).
// Tails run through the same vector body on a padded copy, so every element sees identical
// operations even if the compiler would contract a scalar a*b+c into an FMA.

namespace obccl::optim {
namespace {

constexpr size_t kLanes = 4;

#if OBCCL_OPTIM_SSE2

// Runs body(offset-free pointers) over full blocks of kLanes and once over a zero-padded tail.
// Pointers in `io` are read and written back; pointers in `in` are only read.
template <size_t NIo, size_t NIn, typename Body>
void forEachBlock(float* const (&io)[NIo], const float* const (&in)[NIn], size_t n, Body body) {
  size_t full = n - n % kLanes;
  for (size_t i = 0; i < full; i += kLanes) {
    float* ioAt[NIo > 0 ? NIo : 1];
    const float* inAt[NIn > 0 ? NIn : 1];
    for (size_t k = 0; k < NIo; ++k) ioAt[k] = io[k] + i;
    for (size_t k = 0; k < NIn; ++k) inAt[k] = in[k] + i;
    body(ioAt, inAt);
  }
  size_t rest = n - full;
  if (rest == 0) return;
  float ioTail[NIo > 0 ? NIo : 1][kLanes] = {};
  float inTail[NIn > 0 ? NIn : 1][kLanes] = {};
  float* ioAt[NIo > 0 ? NIo : 1];
  const float* inAt[NIn > 0 ? NIn : 1];
  for (size_t k = 0; k < NIo; ++k) {
    std::memcpy(ioTail[k], io[k] + full, rest * sizeof(float));
    ioAt[k] = ioTail[k];
  }
  for (size_t k = 0; k < NIn; ++k) {
    std::memcpy(inTail[k], in[k] + full, rest * sizeof(float));
    inAt[k] = inTail[k];
  }
  body(ioAt, inAt);
  for (size_t k = 0; k < NIo; ++k) std::memcpy(io[k] + full, ioTail[k], rest * sizeof(float));
}

#endif

}  // namespace

bool allFinite(const float* x, size_t n) { return firstNonFinite(x, n) == n; }

size_t firstNonFinite(const float* x, size_t n) {
  size_t i = 0;
#if OBCCL_OPTIM_SSE2
  // x*0 is NaN exactly when x is infinite or NaN; scan blocks of 64 and pin down the index after.
  const __m128 zero = _mm_setzero_ps();
  constexpr size_t kBlock = 64;
  for (; i + kBlock <= n; i += kBlock) {
    __m128 bad = _mm_setzero_ps();
    for (size_t j = 0; j < kBlock; j += kLanes) {
      __m128 z = _mm_mul_ps(_mm_loadu_ps(x + i + j), zero);
      bad = _mm_or_ps(bad, _mm_cmpunord_ps(z, z));
    }
    if (_mm_movemask_ps(bad) != 0) break;
  }
#endif
  for (; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return n;
}

void warmupUpdate(float* p, float* m, float* v, const float* g, size_t n, const UpdateCoeffs& c) {
  const float c1 = 1.0f - c.beta1, c2 = 1.0f - c.beta2;
#if OBCCL_OPTIM_SSE2
  const __m128 b1 = _mm_set1_ps(c.beta1), b2 = _mm_set1_ps(c.beta2), a1 = _mm_set1_ps(c1),
               a2 = _mm_set1_ps(c2), eps = _mm_set1_ps(c.eps), wd = _mm_set1_ps(c.weightDecay),
               lr = _mm_set1_ps(c.lr);
  float* const io[3] = {p, m, v};
  const float* const in[1] = {g};
  forEachBlock(io, in, n, [&](float* const* o, const float* const* r) {
    __m128 gi = _mm_loadu_ps(r[0]);
    __m128 pi = _mm_loadu_ps(o[0]);
    __m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(o[1])), _mm_mul_ps(a1, gi));
    __m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(o[2])), _mm_mul_ps(a2, _mm_mul_ps(gi, gi)));
    __m128 u = _mm_add_ps(_mm_div_ps(mi, _mm_add_ps(_mm_sqrt_ps(vi), eps)), _mm_mul_ps(wd, pi));
    _mm_storeu_ps(o[0], _mm_sub_ps(pi, _mm_mul_ps(lr, u)));
    _mm_storeu_ps(o[1], mi);
    _mm_storeu_ps(o[2], vi);
  });
#else
  for (size_t i = 0; i < n; ++i) {
    float mi = c.beta1 * m[i] + c1 * g[i];
    float vi = c.beta2 * v[i] + c2 * (g[i] * g[i]);
    float u = mi / (std::sqrt(vi) + c.eps) + c.weightDecay * p[i];
    p[i] = p[i] - c.lr * u;
    m[i] = mi;
    v[i] = vi;
  }
#endif
}

void momentumBlend(float* out, const float* m, const float* g, size_t n, float beta1) {
  const float c1 = 1.0f - beta1;
#if OBCCL_OPTIM_SSE2
  const __m128 b1 = _mm_set1_ps(beta1), a1 = _mm_set1_ps(c1);
  float* const io[1] = {out};
  const float* const in[2] = {m, g};
  forEachBlock(io, in, n, [&](float* const* o, const float* const* r) {
    _mm_storeu_ps(
        o[0], _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(r[0])), _mm_mul_ps(a1, _mm_loadu_ps(r[1]))));
  });
#else
  for (size_t i = 0; i < n; ++i) out[i] = beta1 * m[i] + c1 * g[i];
#endif
}

namespace {

#if OBCCL_OPTIM_SSE2
// One block of the frozen update; `mask` is the loaded mask or ones.
inline __m128 frozenStep(__m128 pi, __m128 mi, __m128 vi, __m128 floor, __m128 eps, __m128 wd,
                         __m128 lr) {
  __m128 root = _mm_max_ps(_mm_sqrt_ps(vi), floor);
  __m128 u = _mm_add_ps(_mm_div_ps(mi, _mm_add_ps(root, eps)), _mm_mul_ps(wd, pi));
  return _mm_sub_ps(pi, _mm_mul_ps(lr, u));
}
#endif

}  // namespace

void frozenUpdate(float* p, float* m, const float* v, const float* mask, size_t n,
                  const UpdateCoeffs& c, float rootFloor) {
#if OBCCL_OPTIM_SSE2
  const __m128 floor = _mm_set1_ps(rootFloor), eps = _mm_set1_ps(c.eps),
               wd = _mm_set1_ps(c.weightDecay), lr = _mm_set1_ps(c.lr);
  float* const io[2] = {p, m};
  if (mask != nullptr) {
    const float* const in[2] = {v, mask};
    forEachBlock(io, in, n, [&](float* const* o, const float* const* r) {
      __m128 mi = _mm_mul_ps(_mm_loadu_ps(o[1]), _mm_loadu_ps(r[1]));
      _mm_storeu_ps(o[0],
                    frozenStep(_mm_loadu_ps(o[0]), mi, _mm_loadu_ps(r[0]), floor, eps, wd, lr));
      _mm_storeu_ps(o[1], mi);
    });
  } else {
    const float* const in[1] = {v};
    forEachBlock(io, in, n, [&](float* const* o, const float* const* r) {
      _mm_storeu_ps(o[0], frozenStep(_mm_loadu_ps(o[0]), _mm_loadu_ps(o[1]), _mm_loadu_ps(r[0]),
                                     floor, eps, wd, lr));
    });
  }
#else
  for (size_t i = 0; i < n; ++i) {
    float mi = mask != nullptr ? m[i] * mask[i] : m[i];
    float root = std::sqrt(v[i]);
    root = root > rootFloor ? root : rootFloor;
    float u = mi / (root + c.eps) + c.weightDecay * p[i];
    p[i] = p[i] - c.lr * u;
    m[i] = mi;
  }
#endif
}

double sumDouble(const float* x, size_t n) { return maskedSumDouble(x, nullptr, n, nullptr); }

double maskedSumDouble(const float* x, const float* mask, size_t n, size_t* included) {
  // Four partial sums keep the dependency chain short; the order is fixed, so every rank that
  // holds the same x gets the same bits.
  double s[4] = {0, 0, 0, 0};
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (mask != nullptr && mask[i] == 0.0f) continue;
    s[i % 4] += static_cast<double>(x[i]);
    ++count;
  }
  if (included != nullptr) *included = count;
  return (s[0] + s[1]) + (s[2] + s[3]);
}

}  // namespace obccl::optim
