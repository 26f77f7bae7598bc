// Element-wise loops of the 1-bit Adam helper. Each has an SSE2 body on x86-64 and a scalar body
// elsewhere; both do the same IEEE single-precision operations in the same order (no contraction),
// so results are bitwise identical between the two and to a plain scalar reference.
#pragma once

#include <cstddef>

namespace obccl::optim {

// Hyper-parameters of one update, resolved (lr already chosen).
struct UpdateCoeffs {
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weightDecay = 0;
};

// True when every x[i] is finite.
bool allFinite(const float* x, size_t n);
// Index of the first non-finite x[i], or n.
size_t firstNonFinite(const float* x, size_t n);

// Warmup (full-precision Adam without bias correction, decoupled weight decay):
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*(g*g);  p = p - lr*(m/(sqrt(v)+eps) + wd*p).
void warmupUpdate(float* p, float* m, float* v, const float* g, size_t n, const UpdateCoeffs& c);

// out = b1*m + (1-b1)*g, the local momentum that the compressed stage averages.
void momentumBlend(float* out, const float* m, const float* g, size_t n, float beta1);

// Compressed-stage parameter update with the frozen v. When mask is non-null, m *= mask first.
//   r = max(sqrt(v), rootFloor);  p = p - lr*(m/(r+eps) + wd*p).
// rootFloor = 0 gives exactly m/(sqrt(v)+eps) (sqrt(v) >= 0).
void frozenUpdate(float* p, float* m, const float* v, const float* mask, size_t n,
                  const UpdateCoeffs& c, float rootFloor);

// Sum of x[i] in double (deterministic order); the auto-freeze statistic and the floor's base.
double sumDouble(const float* x, size_t n);
// Sum of x[i] over coordinates with mask[i] != 0 (mask may be null: all), and how many there are.
double maskedSumDouble(const float* x, const float* mask, size_t n, size_t* included);

}  // namespace obccl::optim
