// Norm finishing, scales and the one runtime dispatch point of the codec layer.
#include <cctype>
#include <cmath>

#include "codec/codec_internal.h"
#include "util/log.h"
#include "util/params.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define OBCCL_CODEC_X86 1
#else
#define OBCCL_CODEC_X86 0
#endif

namespace obccl::codec {

double NormAccumulator::finish() const {
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

float rmsScale(double sumsq, size_t count) {
  return static_cast<float>(std::sqrt(sumsq / static_cast<double>(count)));
}

const char* variantName(Variant v) {
  switch (v) {
    case Variant::kScalar:
      return "scalar";
    case Variant::kAvx2:
      return "avx2";
    case Variant::kAvx512:
      return "avx512";
  }
  return "unknown";
}

namespace {

#if OBCCL_CODEC_X86
bool cpuHasF16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

// The CPU features a variant needs, for the error message.
const char* variantRequirement(Variant v) {
  switch (v) {
    case Variant::kAvx2:
      return "AVX2, FMA and F16C";
    case Variant::kAvx512:
      return "AVX-512 F, BW and VL";
    default:
      return "nothing";
  }
}
#endif

}  // namespace

bool variantSupported(Variant v) {
  switch (v) {
    case Variant::kScalar:
      return true;
#if OBCCL_CODEC_X86
    case Variant::kAvx2: {
      static const bool ok =
          __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpuHasF16c();
      return ok;
    }
    case Variant::kAvx512: {
      static const bool ok = __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && variantSupported(Variant::kAvx2);
      return ok;
    }
#endif
    default:
      return false;
  }
}

Variant bestVariant() {
  if (variantSupported(Variant::kAvx512)) return Variant::kAvx512;
  if (variantSupported(Variant::kAvx2)) return Variant::kAvx2;
  return Variant::kScalar;
}

const Kernels* kernelsFor(Variant v) {
  if (!variantSupported(v)) return nullptr;
  switch (v) {
    case Variant::kScalar:
      return &scalarKernels();
#if OBCCL_CODEC_X86
    case Variant::kAvx2:
      return &avx2Kernels();
    case Variant::kAvx512:
      return &avx512Kernels();
#endif
    default:
      return nullptr;
  }
}

Result<const Kernels*> kernelsByName(const std::string& name) {
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.empty() || lower == "auto") return kernelsFor(bestVariant());
  for (int i = 0; i < kNumVariants; ++i) {
    Variant v = static_cast<Variant>(i);
    if (lower != variantName(v)) continue;
    if (const Kernels* k = kernelsFor(v)) return k;
#if OBCCL_CODEC_X86
    return invalidArgument("OBCCL_CODEC=" + name + ": this CPU cannot run it (needs " +
                           variantRequirement(v) + "); use auto or scalar");
#else
    return invalidArgument("OBCCL_CODEC=" + name +
                           ": this build has no x86 SIMD kernels; use auto or scalar");
#endif
  }
  return invalidArgument("OBCCL_CODEC=" + name + ": unknown variant (use auto, scalar, avx2 or " +
                         "avx512)");
}

Result<const Kernels*> selectKernels() {
  static const Result<const Kernels*> selected = [] {
    Result<const Kernels*> r = kernelsByName(paramString("OBCCL_CODEC"));
    if (r.isOk()) {
      OBCCL_INFO(kSubsysCodec, "codec: using %s kernels (best here: %s)", r.value()->name,
                 variantName(bestVariant()));
    } else {
      OBCCL_WARN(kSubsysCodec, "codec: %s", r.status().message().c_str());
    }
    return r;
  }();
  return selected;
}

const Kernels& kernels() {
  static const Kernels* chosen = [] {
    Result<const Kernels*> r = selectKernels();
    return r.isOk() ? r.value() : kernelsFor(bestVariant());
  }();
  return *chosen;
}

}  // namespace obccl::codec
