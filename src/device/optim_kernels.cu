// Elementwise kernels of the 1-bit Adam helper (DESIGN.md section 6) and the non-finite check.
// Each formula does the same IEEE fp32 operations in the same order as the CPU helper
// (core/onebit_adam_kernels.cc), one rounding each, so both produce the same bits.
#include <string>

#include "device/kernel_common.cuh"

namespace obccl::device {
namespace detail {
namespace {

struct AdamK {
  float lr, beta1, c1, beta2, c2, eps, wd, rootFloor;
};

AdamK makeAdamK(const AdamParams& p, float rootFloor = 0.0f) {
  return AdamK{p.lr,           p.beta1, 1.0f - p.beta1, p.beta2,
               1.0f - p.beta2, p.eps,   p.weightDecay,  rootFloor};
}

__device__ __forceinline__ float momentum(const AdamK& k, float m, float g) {
  return __fadd_rn(__fmul_rn(k.beta1, m), __fmul_rn(k.c1, g));
}

// p - lr * (m / (r + eps) + wd * p)
__device__ __forceinline__ float applyUpdate(const AdamK& k, float p, float m, float r) {
  float u = __fadd_rn(__fdiv_rn(m, __fadd_rn(r, k.eps)), __fmul_rn(k.wd, p));
  return __fsub_rn(p, __fmul_rn(k.lr, u));
}

struct WarmupOp {
  float* p;
  float* m;
  float* v;
  const float* g;
  AdamK k;
  __device__ __forceinline__ void one(float& pi, float& mi, float& vi, float gi) const {
    mi = momentum(k, mi, gi);
    vi = __fadd_rn(__fmul_rn(k.beta2, vi), __fmul_rn(k.c2, __fmul_rn(gi, gi)));
    pi = applyUpdate(k, pi, mi, __fsqrt_rn(vi));
  }
  __device__ __forceinline__ void scalar(size_t i) const { one(p[i], m[i], v[i], g[i]); }
  __device__ __forceinline__ void quad(size_t i) const {
    float4 pq = *reinterpret_cast<const float4*>(p + i);
    float4 mq = *reinterpret_cast<const float4*>(m + i);
    float4 vq = *reinterpret_cast<const float4*>(v + i);
    float4 gq = *reinterpret_cast<const float4*>(g + i);
    one(pq.x, mq.x, vq.x, gq.x);
    one(pq.y, mq.y, vq.y, gq.y);
    one(pq.z, mq.z, vq.z, gq.z);
    one(pq.w, mq.w, vq.w, gq.w);
    *reinterpret_cast<float4*>(p + i) = pq;
    *reinterpret_cast<float4*>(m + i) = mq;
    *reinterpret_cast<float4*>(v + i) = vq;
  }
};

// out may equal m: each element is read before it is written, by the same thread.
struct MomentumOp {
  float* out;
  const float* m;
  const float* g;
  AdamK k;
  __device__ __forceinline__ void scalar(size_t i) const { out[i] = momentum(k, m[i], g[i]); }
  __device__ __forceinline__ void quad(size_t i) const {
    float4 mq = *reinterpret_cast<const float4*>(m + i);
    float4 gq = *reinterpret_cast<const float4*>(g + i);
    *reinterpret_cast<float4*>(out + i) =
        make_float4(momentum(k, mq.x, gq.x), momentum(k, mq.y, gq.y), momentum(k, mq.z, gq.z),
                    momentum(k, mq.w, gq.w));
  }
};

template <bool kMask>
struct FrozenOp {
  float* p;
  float* m;
  const float* v;
  const float* mask;
  AdamK k;
  __device__ __forceinline__ void one(float& pi, float& mi, float vi, float maski) const {
    if (kMask) mi = __fmul_rn(mi, maski);
    float root = __fsqrt_rn(vi);
    pi = applyUpdate(k, pi, mi, root > k.rootFloor ? root : k.rootFloor);
  }
  __device__ __forceinline__ void scalar(size_t i) const {
    one(p[i], m[i], v[i], kMask ? mask[i] : 1.0f);
  }
  __device__ __forceinline__ void quad(size_t i) const {
    float4 pq = *reinterpret_cast<const float4*>(p + i);
    float4 mq = *reinterpret_cast<const float4*>(m + i);
    float4 vq = *reinterpret_cast<const float4*>(v + i);
    float4 kq = kMask ? *reinterpret_cast<const float4*>(mask + i) : make_float4(1, 1, 1, 1);
    one(pq.x, mq.x, vq.x, kq.x);
    one(pq.y, mq.y, vq.y, kq.y);
    one(pq.z, mq.z, vq.z, kq.z);
    one(pq.w, mq.w, vq.w, kq.w);
    *reinterpret_cast<float4*>(p + i) = pq;
    if (kMask) *reinterpret_cast<float4*>(m + i) = mq;
  }
};

struct ZeroMaskOp {
  const float* v;
  float* mask;
  __device__ __forceinline__ static float maskOf(float vi) { return vi == 0.0f ? 0.0f : 1.0f; }
  __device__ __forceinline__ void scalar(size_t i) const { mask[i] = maskOf(v[i]); }
  __device__ __forceinline__ void quad(size_t i) const {
    float4 vq = *reinterpret_cast<const float4*>(v + i);
    *reinterpret_cast<float4*>(mask + i) =
        make_float4(maskOf(vq.x), maskOf(vq.y), maskOf(vq.z), maskOf(vq.w));
  }
};

// Grid-stride over quads (kVec: every pointer is 16-byte aligned), then the scalar tail.
template <class Op, bool kVec>
__global__ void __launch_bounds__(kThreads) elementwiseKernel(Op op, size_t n) {
  const size_t tid = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t done = 0;
  if (kVec) {
    const size_t quads = n / 4;
    for (size_t q = tid; q < quads; q += stride) op.quad(q * 4);
    done = quads * 4;
  }
  for (size_t i = done + tid; i < n; i += stride) op.scalar(i);
}

template <class Op>
Status launchElementwise(const Op& op, bool vec, size_t n, void* stream, const char* name) {
  if (n == 0) return Status::ok();
  auto kernel = vec ? elementwiseKernel<Op, true> : elementwiseKernel<Op, false>;
  return launch(kernel, name, kThreads, vec ? (n + 3) / 4 : n, kThreads, asStream(stream), op, n);
}

// Non-finite: all exponent bits set. kKind: 4 fp32, 2 fp16, 3 bf16 (a tag, not a size); a word
// holds one fp32 or two 16-bit elements.
template <int kKind>
__device__ __forceinline__ bool wordHasNonFinite(uint32_t w) {
  if (kKind == 4) return (w & 0x7f800000u) == 0x7f800000u;
  constexpr uint32_t kExp = kKind == 2 ? 0x7c00u : 0x7f80u;
  return (w & kExp) == kExp || ((w >> 16) & kExp) == kExp;
}

// Reads 16 bytes at a time when kVec (buf 16-byte aligned), then the tail element by element.
template <int kKind, bool kVec>
__global__ void __launch_bounds__(kThreads)
    nonFiniteKernel(const void* __restrict__ buf, size_t bytes, int* flag) {
  const size_t tid = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  bool bad = false;
  size_t done = 0;
  if (kVec) {
    const uint4* q = static_cast<const uint4*>(buf);
    const size_t quads = bytes / 16;
    for (size_t k = tid; k < quads; k += stride) {
      uint4 v = q[k];
      bad |= wordHasNonFinite<kKind>(v.x) | wordHasNonFinite<kKind>(v.y) |
             wordHasNonFinite<kKind>(v.z) | wordHasNonFinite<kKind>(v.w);
    }
    done = quads * 16;
  }
  const size_t elem = kKind == 4 ? 4 : 2;
  const uint8_t* b = static_cast<const uint8_t*>(buf);
  for (size_t i = done + tid * elem; i < bytes; i += stride * elem) {
    uint32_t w = elem == 4 ? *reinterpret_cast<const uint32_t*>(b + i)
                           : *reinterpret_cast<const uint16_t*>(b + i);
    bad |= wordHasNonFinite<kKind>(w);
  }
  if (bad) atomicExch(flag, 1);
}

template <int kKind>
Status launchNonFinite(const void* buf, size_t bytes, int* flag, void* stream) {
  auto kernel = aligned(buf, 16) ? nonFiniteKernel<kKind, true> : nonFiniteKernel<kKind, false>;
  return launch(kernel, "nonFiniteKernel", kThreads, (bytes + 15) / 16, kThreads, asStream(stream),
                buf, bytes, flag);
}

Status nullArgs(const char* what, size_t n) {
  return invalidArgument(std::string(what) + ": null buffer for " + std::to_string(n) +
                         " elements");
}

}  // namespace
}  // namespace detail

Status warmupUpdate(float* p, float* m, float* v, const float* g, size_t n,
                    const AdamParams& params, void* stream) {
  using namespace detail;
  if (n > 0 && (!p || !m || !v || !g)) return nullArgs("warmupUpdate", n);
  WarmupOp op{p, m, v, g, makeAdamK(params)};
  bool vec = aligned(p, 16) && aligned(m, 16) && aligned(v, 16) && aligned(g, 16);
  return launchElementwise(op, vec, n, stream, "warmupUpdateKernel");
}

Status momentumBlend(float* out, const float* m, const float* g, size_t n, float beta1,
                     void* stream) {
  using namespace detail;
  if (n > 0 && (!out || !m || !g)) return nullArgs("momentumBlend", n);
  AdamParams params;
  params.beta1 = beta1;
  MomentumOp op{out, m, g, makeAdamK(params)};
  bool vec = aligned(out, 16) && aligned(m, 16) && aligned(g, 16);
  return launchElementwise(op, vec, n, stream, "momentumBlendKernel");
}

Status frozenUpdate(float* p, float* m, const float* v, const float* mask, size_t n,
                    const AdamParams& params, float rootFloor, void* stream) {
  using namespace detail;
  if (n > 0 && (!p || !m || !v)) return nullArgs("frozenUpdate", n);
  bool vec = aligned(p, 16) && aligned(m, 16) && aligned(v, 16) && aligned(mask, 16);
  if (mask != nullptr) {
    FrozenOp<true> op{p, m, v, mask, makeAdamK(params, rootFloor)};
    return launchElementwise(op, vec, n, stream, "frozenUpdateKernel");
  }
  FrozenOp<false> op{p, m, v, nullptr, makeAdamK(params, rootFloor)};
  return launchElementwise(op, vec, n, stream, "frozenUpdateKernel");
}

Status zeroVarianceMask(const float* v, float* mask, size_t n, void* stream) {
  using namespace detail;
  if (n > 0 && (!v || !mask)) return nullArgs("zeroVarianceMask", n);
  ZeroMaskOp op{v, mask};
  return launchElementwise(op, aligned(v, 16) && aligned(mask, 16), n, stream, "zeroMaskKernel");
}

Status checkNonFinite(const void* buf, obcclDataType_t type, size_t n, int* flag, void* stream) {
  using namespace detail;
  if (flag == nullptr || (n > 0 && buf == nullptr)) return nullArgs("checkNonFinite", n);
  OBCCL_TRY(memsetAsync(flag, 0, sizeof(int), stream));
  if (n == 0) return Status::ok();
  switch (type) {
    case obcclFloat32:
      return launchNonFinite<4>(buf, n * 4, flag, stream);
    case obcclFloat16:
      return launchNonFinite<2>(buf, n * 2, flag, stream);
    case obcclBfloat16:
      return launchNonFinite<3>(buf, n * 2, flag, stream);
    default:
      return invalidArgument("checkNonFinite: datatype " + std::to_string(type) +
                             " is not fp32, fp16 or bf16");
  }
}

}  // namespace obccl::device
