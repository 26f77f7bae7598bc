// The device layer's plain C++ interface: CUDA runtime helpers and the kernel launchers of the
// compressed allreduce (DESIGN.md section 4) and the optimizer helper (section 6). No CUDA header
// is included here: streams are passed as void* (a cudaStream_t; nullptr is the legacy default
// stream), and every pointer handed to a launcher is device memory unless it says otherwise.
//
// Every launcher only enqueues work on the stream: none synchronises with the host. Expected
// failures (bad arguments, CUDA errors at launch) come back as Status, with the cause named.
#pragma once

#include <cstddef>
#include <cstdint>

#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::device {

// True when the CUDA runtime loads and sees at least one device.
bool deviceAvailable();
// Number of visible devices; a failure names the CUDA error (no driver, no device).
Result<int> deviceCount();
// True for device and managed memory, false for pageable or pinned host memory (and on machines
// without a device, where no pointer can be a device pointer). The first call on a machine with a
// GPU initialises the CUDA runtime (cudaPointerGetAttributes may create the primary context).
Result<bool> isDevicePointer(const void* ptr);
// The current device of this thread, and selecting one.
Result<int> currentDevice();
Status setDevice(int device);

Status streamSynchronize(void* stream);
// cudaMemcpyAsync with cudaMemcpyDefault: works for any pair of host/device pointers.
Status copyAsync(void* dst, const void* src, size_t bytes, void* stream);
Status memsetAsync(void* dst, int value, size_t bytes, void* stream);

// RAII device allocation (cudaMalloc/cudaFree). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> allocate(size_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

 private:
  void reset();
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// RAII CUDA stream (cudaStreamNonBlocking). Move-only.
class DeviceStream {
 public:
  DeviceStream() = default;
  static Result<DeviceStream> create();
  DeviceStream(DeviceStream&& other) noexcept;
  DeviceStream& operator=(DeviceStream&& other) noexcept;
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;
  ~DeviceStream();

  void* get() const { return stream_; }  // a cudaStream_t

 private:
  void reset();
  void* stream_ = nullptr;
};

// RAII pinned host allocation (cudaMallocHost/cudaFreeHost) for staging. Move-only.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  static Result<PinnedBuffer> allocate(size_t bytes);
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void reset();
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Where the scales of a buffer of `count` elements apply. The buffer is cut into chunks of
// chunkLen elements, each chunk into blocks of blockLen elements (the last block of a chunk may
// be shorter); each block has one scale, numbered chunk * blocksPerChunk() + block. count,
// chunkLen and blockLen are multiples of 8 and count is a multiple of chunkLen. A block's scale is
// sqrt(sum of squares / its length), the sum accumulated in double and the result rounded to fp32.
struct ScaleLayout {
  size_t count = 0;
  size_t chunkLen = 0;
  size_t blockLen = 0;

  size_t chunks() const { return chunkLen == 0 ? 0 : count / chunkLen; }
  size_t blocksPerChunk() const { return blockLen == 0 ? 0 : (chunkLen + blockLen - 1) / blockLen; }
  size_t numScales() const { return chunks() * blocksPerChunk(); }
  // Elements under scale `index`.
  size_t scaleLen(size_t index) const;
  Status validate() const;

  // Worker side of a padded buffer of Np elements over n ranks: one scale over all Np elements
  // (compressBlock 0, the paper), else one per block of compressBlock inside each chunk Np/n.
  static ScaleLayout worker(size_t paddedCount, int nranks, size_t compressBlock);
  // Server side: the rank's chunk of c elements, one scale or one per block.
  static ScaleLayout server(size_t chunkCount, size_t compressBlock);
  // The gathered result (phase 2): n chunks of c elements, scales per chunk (or per block).
  static ScaleLayout gathered(size_t paddedCount, int nranks, size_t compressBlock);
};

// Scratch (device memory) that workerEncode/serverNorm need for `layout`.
size_t normScratchBytes(const ScaleLayout& layout);

// Device outputs of a norm pass, one entry per scale. sumSquares and nonFinite may be null.
// *nonFinite is set to 0, then to 1 when some sum of squares is not finite (a NaN or infinity in
// the inputs, or an overflow of u = x + e); a non-finite scale says the same to the other ranks.
struct NormOutputs {
  double* sumSquares = nullptr;
  float* scales = nullptr;
  int* nonFinite = nullptr;
};

// Packed signs and scales of several ranks, rank i's at bits + i * bitsStrideBytes and
// scales + i * scalesStrideBytes (strides 0: densely packed, chunkLen/8 bytes and
// blocksPerChunk() floats). Each rank contributes blocksPerChunk() scales.
struct RankPacked {
  const uint8_t* bits = nullptr;
  size_t bitsStrideBytes = 0;
  const float* scales = nullptr;
  size_t scalesStrideBytes = 0;
  int nranks = 0;
};

// The launchers below mirror codec/codec.h (same names, same arithmetic; given the same scales
// their bits, error buffers and outputs are bitwise equal to the CPU codec's). They differ in two
// ways: one call covers a whole layout (all chunks and blocks), and the sums of squares are
// combined in a GPU-friendly fixed order instead of the CPU's 8 lanes (equal to rounding, and
// identical from run to run).

// Worker pass 1: u_i = x_i + e_i for i < n, u_i = e_i for n <= i < layout.count (padding); per
// scale sums of u^2 in double and the scales a = float(sqrt(sum / len)) into `out`; the packed
// signs of u (layout.count / 8 bytes) into `bits` unless it is null. x is fp32, fp16 or bf16 with
// n elements; e has layout.count fp32 elements and is only read.
Status workerEncode(const void* x, obcclDataType_t type, size_t n, const float* e,
                    const ScaleLayout& layout, void* scratch, size_t scratchBytes,
                    const NormOutputs& out, uint8_t* bits, void* stream);
// Worker pass 2, after every rank's input is known to be finite: recomputes u and writes
// e_i = u_i - a*sigma(u_i) in place (a = scales[scale of i]); also the packed signs when `bits` is
// not null (for callers that send them only after the consensus). When skipIf is not null the
// kernel reads *skipIf (device memory) and writes nothing if it is non-zero: a consensus reached
// on the device (every rank's non-finite flags) can cancel the update without a host sync.
Status workerUpdate(const void* x, obcclDataType_t type, size_t n, float* e,
                    const ScaleLayout& layout, const float* scales, uint8_t* bits, void* stream,
                    const int* skipIf = nullptr);

// Server pass 1 over this rank's chunk (layout = ScaleLayout::server): for element k,
// z_k = (sum over ranks i in order of a_{i,block(k)} * sigma_{i,k}, accumulated in fp32 from
// 0.0f) * (1.0f / nranks) + s_k; per-scale sums of z^2, scales b and the non-finite flag into
// `out`. Writes nothing else.
Status serverNorm(const RankPacked& in, const float* s, const ScaleLayout& layout, void* scratch,
                  size_t scratchBytes, const NormOutputs& out, void* stream);
// Server pass 2: recomputes z; writes its packed signs (layout.count / 8 bytes) when `bits` is not
// null and s_k = z_k - b*sigma(z_k) into sOut when it is not null (sOut equals s or does not
// overlap it). skipIf as for workerUpdate.
Status serverEncode(const RankPacked& in, const float* s, const ScaleLayout& layout,
                    const float* scales, uint8_t* bits, float* sOut, void* stream,
                    const int* skipIf = nullptr);

// Final decode (layout = ScaleLayout::gathered): y_i = b * sigma_i for i < n, where rank j's
// packed chunk and scales in `in` cover elements [j*chunkLen, (j+1)*chunkLen). y is written as
// fp32, fp16 or bf16 (round to nearest even, as util/half.h). skipIf as for workerUpdate.
Status decode(const RankPacked& in, const ScaleLayout& layout, size_t n, void* y,
              obcclDataType_t type, void* stream, const int* skipIf = nullptr);

// Optimizer (DESIGN.md section 6), all fp32, n elements; the same IEEE operations in the same
// order as core/onebit_adam_kernels.h (one rounding each, no FMA), so results are bitwise equal
// to the CPU helper's. c1 = 1.0f - beta1 and c2 = 1.0f - beta2 are fp32 subtractions.
struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weightDecay = 0.0f;
};
// Warmup: m = b1*m + c1*g; v = b2*v + c2*(g*g); p = p - lr*(m/(sqrt(v)+eps) + wd*p).
Status warmupUpdate(float* p, float* m, float* v, const float* g, size_t n,
                    const AdamParams& params, void* stream);
// Compressed stage, before the compressed allreduce: out = b1*m + c1*g (out may equal m).
Status momentumBlend(float* out, const float* m, const float* g, size_t n, float beta1,
                     void* stream);
// Compressed stage, after it: m = m*mask when mask is not null; r = max(sqrt(v), rootFloor)
// (as r > rootFloor ? r : rootFloor); p = p - lr*(m/(r+eps) + wd*p). rootFloor 0: plain sqrt(v).
Status frozenUpdate(float* p, float* m, const float* v, const float* mask, size_t n,
                    const AdamParams& params, float rootFloor, void* stream);
// mask_i = (v_i == 0) ? 0 : 1: the automatic mask at the freeze.
Status zeroVarianceMask(const float* v, float* mask, size_t n, void* stream);

// *flag = 0, then 1 when some element of buf (n elements of fp32, fp16 or bf16) is NaN or
// infinite.
Status checkNonFinite(const void* buf, obcclDataType_t type, size_t n, int* flag, void* stream);

}  // namespace obccl::device
