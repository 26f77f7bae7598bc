// Shared by the test_compressed_*.cc multirank tests: worlds with a given compressBlock (and
// optionally a small pipeline segment, so chunks span many frames), inputs in any float datatype,
// and one compressed allreduce on every rank at once.
#pragma once

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/onebit_reference.h"
#include "multirank/harness.h"
#include "util/half.h"

namespace obccl_test {

// The default transport order (shm, ucx, tcp: the first that connects), for tests about the
// arithmetic rather than a transport.
constexpr const char* kAnyTransport = nullptr;

// n communicators over `transports` with config->compressBlock = block; segmentBytes > 0 sets
// OBCCL_SEGMENT_BYTES while the communicators initialise.
inline World makeCompressedWorld(int n, const char* transports, int block,
                                 size_t segmentBytes = 0) {
  if (segmentBytes > 0) ::setenv("OBCCL_SEGMENT_BYTES", std::to_string(segmentBytes).c_str(), 1);
  World w;
  obcclUniqueId id;
  w.result = obcclGetUniqueId(&id);
  if (w.result == obcclSuccess) {
    std::vector<obcclComm_t> comms(n, nullptr);
    std::vector<std::string> errors(n);
    obcclConfig_t cfg = makeConfig(transports);
    cfg.compressBlock = block;
    auto rcs = runRanks<obcclResult_t>(n, [&](int r) {
      obcclResult_t rc = obcclCommInitRankConfig(&comms[r], n, id, r, &cfg);
      if (rc != obcclSuccess) errors[r] = obcclGetLastError(nullptr);
      return rc;
    });
    w.comms = comms;
    for (int r = 0; r < n; ++r) {
      if (rcs[r] != obcclSuccess && w.ok()) {
        w.result = rcs[r];
        w.error = "rank " + std::to_string(r) + ": " + errors[r];
      }
    }
    if (!w.ok()) w.destroy();
  } else {
    w.error = obcclGetLastError(nullptr);
  }
  if (segmentBytes > 0) ::unsetenv("OBCCL_SEGMENT_BYTES");
  return w;
}

inline size_t elemBytes(obcclDataType_t dt) { return dt == obcclFloat32 ? 4 : 2; }
inline const char* floatTypeName(obcclDataType_t dt) {
  return dt == obcclFloat32 ? "float32" : dt == obcclFloat16 ? "float16" : "bfloat16";
}

// Every rank's buffers for a sequence of calls.
struct CompressedBuffers {
  obcclDataType_t dt = obcclFloat32;
  size_t count = 0;
  std::vector<std::vector<uint8_t>> send, recv;  // count elements (+ 1 guard element)
  std::vector<std::vector<float>> x;             // the inputs as fp32 (exact)
  OnebitErrors errors;                           // the library's error buffers
};

inline CompressedBuffers makeBuffers(World& w, obcclDataType_t dt, size_t count) {
  CompressedBuffers b;
  b.dt = dt;
  b.count = count;
  const int n = w.size();
  size_t worker = 0, server = 0;
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(count, w[0], &worker, &server), obcclSuccess);
  b.errors.worker.assign(n, std::vector<float>(worker, 0.0f));
  b.errors.server.assign(n, std::vector<float>(server, 0.0f));
  b.send.assign(n, std::vector<uint8_t>((count + 1) * elemBytes(dt), 0));
  b.recv.assign(n, std::vector<uint8_t>((count + 1) * elemBytes(dt), 0xcd));
  b.x.assign(n, std::vector<float>(count));
  return b;
}

// Fills every rank's input with random values (a few exact zeros of either sign) at `scale`.
inline void fillInputs(CompressedBuffers* b, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  for (size_t r = 0; r < b->send.size(); ++r) {
    for (size_t i = 0; i < b->count; ++i) {
      float v = normal(rng);
      if (rng() % 61 == 0) v = (rng() & 1) ? 0.0f : -0.0f;
      uint32_t bits = onebitEncode(v, b->dt);
      if (b->dt == obcclFloat32) {
        std::memcpy(&b->send[r][4 * i], &bits, 4);
        b->x[r][i] = v;
      } else {
        uint16_t h = static_cast<uint16_t>(bits);
        std::memcpy(&b->send[r][2 * i], &h, 2);
        b->x[r][i] = b->dt == obcclFloat16 ? obccl::halfToFloat(h) : obccl::bf16ToFloat(h);
      }
    }
  }
}

// One compressed allreduce on every rank (in place: recv = send). Returns each rank's result and
// fills `messages` with obcclGetLastError for failures.
inline std::vector<obcclResult_t> runCompressed(World& w, CompressedBuffers* b, bool inPlace,
                                                std::vector<std::string>* messages = nullptr) {
  const int n = w.size();
  std::vector<std::string> msgs(n);
  auto rcs = runRanks<obcclResult_t>(
      n,
      [&](int r) {
        void* out = inPlace ? b->send[r].data() : b->recv[r].data();
        obcclResult_t rc = obcclCompressedAllReduce(b->send[r].data(), out, b->count, b->dt,
                                                    b->errors.worker[r].data(),
                                                    b->errors.server[r].data(), w[r], nullptr);
        if (rc != obcclSuccess) msgs[r] = obcclGetLastError(w[r]);
        return rc;
      },
      &w.comms);
  if (messages) *messages = msgs;
  return rcs;
}

// The output of rank r after runCompressed.
inline const std::vector<uint8_t>& outputOf(const CompressedBuffers& b, int r, bool inPlace) {
  return inPlace ? b.send[r] : b.recv[r];
}

}  // namespace obccl_test
