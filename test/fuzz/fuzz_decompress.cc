// The decompression side of the codec on arbitrary bits, lengths, block sizes and scales
// (including NaN and infinities): no crash, no out-of-bounds access (ASan), and every SIMD
// variant bit-identical to the scalar reference.
#include <cstring>
#include <vector>

#include "codec/codec.h"

using obccl::codec::Kernels;
using obccl::codec::ServerSpan;
using obccl::codec::Variant;

namespace {

struct Input {
  const uint8_t* p;
  size_t n;
  template <typename T>
  T take() {
    T v{};
    size_t k = n < sizeof(T) ? n : sizeof(T);
    std::memcpy(&v, p, k);
    p += k;
    n -= k;
    return v;
  }
};

// Bitwise equality, except that any two NaNs are equal: a NaN scale never reaches the kernels in
// a real call (non-finite input is refused first), and the variants may differ in a NaN's sign.
bool sameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != a[i] && b[i] != b[i]) continue;
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  size_t nranks = 1 + in.take<uint8_t>() % 8;
  size_t len = 8 * (1 + in.take<uint16_t>() % 128);
  size_t block = 8 * (in.take<uint8_t>() % 40);  // 0: one block
  size_t blocks = obccl::codec::blockCount(len, block);
  std::vector<std::vector<uint8_t>> bits(nranks, std::vector<uint8_t>(len / 8));
  std::vector<std::vector<float>> scales(nranks, std::vector<float>(blocks));
  for (auto& b : bits)
    for (auto& v : b) v = in.take<uint8_t>();
  for (auto& s : scales)
    for (auto& v : s) v = in.take<float>();
  std::vector<float> s(len);
  for (auto& v : s) v = in.take<float>();
  std::vector<const uint8_t*> bp;
  std::vector<const float*> sp;
  for (size_t i = 0; i < nranks; ++i) {
    bp.push_back(bits[i].data());
    sp.push_back(scales[i].data());
  }
  ServerSpan span{nranks, bp.data(), sp.data(), s.data()};

  const Kernels* ref = obccl::codec::kernelsFor(Variant::kScalar);
  std::vector<float> refOut(len), refS(len);
  std::vector<uint8_t> refBits(len / 8);
  std::vector<obccl::codec::NormAccumulator> refNorms(blocks);
  ref->decode(bits[0].data(), len, block, scales[0].data(), refOut.data(), obcclFloat32);
  ref->serverNorm(span, len, block, refNorms.data());
  ref->serverEncode(span, len, block, scales[0].data(), refBits.data(), refS.data());
  for (int v = 1; v < obccl::codec::kNumVariants; ++v) {
    const Kernels* k = obccl::codec::kernelsFor(static_cast<Variant>(v));
    if (k == nullptr) continue;
    std::vector<float> out(len), sOut(len);
    std::vector<uint8_t> outBits(len / 8);
    std::vector<obccl::codec::NormAccumulator> norms(blocks);
    k->decode(bits[0].data(), len, block, scales[0].data(), out.data(), obcclFloat32);
    k->serverNorm(span, len, block, norms.data());
    k->serverEncode(span, len, block, scales[0].data(), outBits.data(), sOut.data());
    if (!sameFloats(out, refOut)) __builtin_trap();
    if (std::memcmp(outBits.data(), refBits.data(), len / 8) != 0) __builtin_trap();
    if (!sameFloats(sOut, refS)) __builtin_trap();
    for (size_t b = 0; b < blocks; ++b)
      for (int l = 0; l < 8; ++l) {
        double x = norms[b].lane[l], r = refNorms[b].lane[l];
        if (x != x && r != r) continue;  // NaN payloads may differ; both flag bad input
        if (std::memcmp(&x, &r, sizeof(x)) != 0) __builtin_trap();
      }
  }
  return 0;
}
