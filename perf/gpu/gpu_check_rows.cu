// The rows of gpu_check: each runs one device kernel once from a known state, compares its
// outputs with the host reference for the same inputs and scales, then times it.
#include <cmath>
#include <cstring>

#include "device/reference.h"
#include "gpu_check.h"

namespace obccl::gpucheck {

namespace ref = device::ref;
using device::DeviceBuffer;
using device::NormOutputs;
using device::RankPacked;
using device::ScaleLayout;

namespace {

size_t roundUp(size_t v, size_t unit) { return (v + unit - 1) / unit * unit; }

std::vector<uint8_t> randomBytes(size_t n, uint64_t seed) {
  std::vector<float> f = randomFloats(n, 1.0f, seed);
  std::vector<uint8_t> b(n);
  parallelFor(n, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      uint32_t u;
      std::memcpy(&u, &f[i], 4);
      b[i] = static_cast<uint8_t>(u ^ (u >> 11));
    }
  });
  return b;
}

std::vector<float> randomScales(size_t n, uint64_t seed) {
  std::vector<float> s = randomFloats(n, 2.0f, seed);
  for (float& v : s) v = std::fabs(v);
  return s;
}

void sync(const Bench& b) { GPU_CHECK_CUDA(cudaStreamSynchronize(b.stream)); }

// Norm outputs of one pass, on the device.
struct NormBuffers {
  DeviceBuffer scratch, sums, scales, flag;
  explicit NormBuffers(const ScaleLayout& l)
      : scratch(devAlloc(device::normScratchBytes(l))),
        sums(devAlloc(l.numScales() * 8)),
        scales(devAlloc(l.numScales() * 4)),
        flag(devAlloc(4)) {}
  NormOutputs out() const { return {sums.as<double>(), scales.as<float>(), flag.as<int>()}; }
};

void checkFlagClear(Row& row, const NormBuffers& nb) {
  if (fromDevice<int>(nb.flag.data(), 1)[0] != 0) {
    row.ok = false;
    row.check = "non-finite flag set on finite input";
  }
}

}  // namespace

void runWorkerRows(Bench& b) {
  const Options& o = b.opt;
  const size_t np = roundUp(o.elems, 8 * static_cast<size_t>(o.ranks)), n = np - 5;
  const ScaleLayout l = ScaleLayout::worker(np, o.ranks, o.block);
  const size_t ns = l.numScales();
  std::printf("worker: %zu elements padded to %zu, %zu scale(s)\n", n, np, ns);
  std::vector<float> xf = randomFloats(n, 2.0f, 1), e0 = randomFloats(np, 0.5f, 2);
  DeviceBuffer de0 = toDevice(e0), de = devAlloc(np * 4), bits = devAlloc(np / 8);
  NormBuffers nb(l);
  for (obcclDataType_t type : {obcclFloat32, obcclBfloat16}) {
    const size_t es = type == obcclFloat32 ? 4 : 2;
    std::vector<uint8_t> x = encodeAs(xf, type);
    DeviceBuffer dx = toDevice(x);
    copyDevice(de.data(), de0.data(), np * 4);
    auto encode = [&] {
      checkOk(device::workerEncode(dx.data(), type, n, de.as<float>(), l, nb.scratch.data(),
                                   nb.scratch.size(), nb.out(), bits.as<uint8_t>(), b.stream),
              "workerEncode");
    };
    encode();
    sync(b);
    auto u = [&](size_t i) { return ref::workerU(x.data(), type, n, e0.data(), i); };
    std::vector<double> sums = fromDevice<double>(nb.sums.data(), ns);
    std::vector<float> scales = fromDevice<float>(nb.scales.data(), ns);
    std::vector<uint8_t> gpuBits = fromDevice<uint8_t>(bits.data(), np / 8);
    Row enc{"worker_encode", typeName(type), np, double(es * n + 4 * np + np / 8)};
    checkFlagClear(enc, nb);
    checkNorms(enc, l, u, sums, scales);
    expectEqual(enc, "bits", np / 8, [&](size_t k) { return gpuBits[k] == signByte(u, k); });
    b.measure(enc, encode);

    copyDevice(de.data(), de0.data(), np * 4);
    auto update = [&] {
      checkOk(device::workerUpdate(dx.data(), type, n, de.as<float>(), l, nb.scales.as<float>(),
                                   nullptr, b.stream),
              "workerUpdate");
    };
    update();
    sync(b);
    std::vector<float> gpuE = fromDevice<float>(de.data(), np);
    Row upd{"worker_update", typeName(type), np, double(es * n + 8 * np)};
    expectEqual(upd, "error", np, [&](size_t i) {
      float ui = u(i), a = scales[ref::scaleIndex(l, i)];
      return sameFloat(gpuE[i], ui - (ref::signBit(ui) ? a : -a));
    });
    b.measure(upd, update);
  }
}

void runServerRows(Bench& b) {
  const Options& o = b.opt;
  // The server chunk is as large as the worker buffer, to time hundreds of MiB.
  const size_t c = roundUp(o.elems, 8), nr = static_cast<size_t>(o.ranks);
  const ScaleLayout l = ScaleLayout::server(c, o.block);
  const size_t bpc = l.blocksPerChunk();
  std::printf("server: chunk of %zu elements from %zu ranks, %zu scale(s)\n", c, nr, bpc);
  std::vector<uint8_t> bits = randomBytes(nr * c / 8, 3);
  std::vector<float> rankScales = randomScales(nr * bpc, 4), s0 = randomFloats(c, 0.3f, 5);
  DeviceBuffer dbits = toDevice(bits), dscales = toDevice(rankScales), ds0 = toDevice(s0);
  DeviceBuffer ds = devAlloc(c * 4), outBits = devAlloc(c / 8);
  copyDevice(ds.data(), ds0.data(), c * 4);
  RankPacked in, host;
  in.bits = dbits.as<uint8_t>();
  in.scales = dscales.as<float>();
  in.nranks = o.ranks;
  host = in;
  host.bits = bits.data();
  host.scales = rankScales.data();
  auto z = [&](size_t k) { return ref::serverZ(host, s0.data(), l, k); };

  NormBuffers nb(l);
  auto norm = [&] {
    checkOk(device::serverNorm(in, ds.as<float>(), l, nb.scratch.data(), nb.scratch.size(),
                               nb.out(), b.stream),
            "serverNorm");
  };
  norm();
  sync(b);
  std::vector<double> sums = fromDevice<double>(nb.sums.data(), bpc);
  std::vector<float> scales = fromDevice<float>(nb.scales.data(), bpc);
  Row nrow{"server_norm", "f32", c, double(nr * c / 8 + 4 * c)};
  checkFlagClear(nrow, nb);
  checkNorms(nrow, l, z, sums, scales);
  b.measure(nrow, norm);

  auto encode = [&] {
    checkOk(device::serverEncode(in, ds.as<float>(), l, nb.scales.as<float>(),
                                 outBits.as<uint8_t>(), ds.as<float>(), b.stream),
            "serverEncode");
  };
  encode();
  sync(b);
  std::vector<uint8_t> gpuBits = fromDevice<uint8_t>(outBits.data(), c / 8);
  std::vector<float> gpuS = fromDevice<float>(ds.data(), c);
  Row erow{"server_encode", "f32", c, double(nr * c / 8 + 8 * c + c / 8)};
  expectEqual(erow, "bits", c / 8, [&](size_t k) { return gpuBits[k] == signByte(z, k); });
  expectEqual(erow, "error", c, [&](size_t k) {
    float zk = z(k), bk = scales[ref::scaleIndex(l, k)];
    return sameFloat(gpuS[k], zk - (ref::signBit(zk) ? bk : -bk));
  });
  b.measure(erow, encode);
}

void runDecodeRows(Bench& b) {
  const Options& o = b.opt;
  const size_t np = roundUp(o.elems, 8 * static_cast<size_t>(o.ranks)), n = np - 5;
  const ScaleLayout l = ScaleLayout::gathered(np, o.ranks, o.block);
  std::vector<uint8_t> bits = randomBytes(np / 8, 6);
  std::vector<float> scales = randomScales(o.ranks * l.blocksPerChunk(), 7);
  DeviceBuffer dbits = toDevice(bits), dscales = toDevice(scales), dy = devAlloc(n * 4);
  RankPacked in, host;
  in.bits = dbits.as<uint8_t>();
  in.scales = dscales.as<float>();
  in.nranks = o.ranks;
  host = in;
  host.bits = bits.data();
  host.scales = scales.data();
  for (obcclDataType_t type : {obcclFloat32, obcclBfloat16}) {
    const size_t es = type == obcclFloat32 ? 4 : 2;
    auto run = [&] { checkOk(device::decode(in, l, n, dy.data(), type, b.stream), "decode"); };
    run();
    sync(b);
    std::vector<uint8_t> y = fromDevice<uint8_t>(dy.data(), n * es);
    Row row{"decode", typeName(type), n, double(np / 8 + es * n)};
    expectEqual(row, "output", n, [&](size_t i) {
      int chunk = static_cast<int>(i / l.chunkLen);
      size_t k = i % l.chunkLen;
      float bj = ref::rankScale(host, l, chunk, k / l.blockLen);
      uint8_t want[4];
      ref::storeElement(want, type, 0, ref::packedBit(ref::rankBits(host, l, chunk), k) ? bj : -bj);
      return std::memcmp(want, &y[i * es], es) == 0;
    });
    b.measure(row, run);
  }
}

void runOptimRows(Bench& b) {
  const size_t n = b.opt.elems;
  std::vector<float> p = randomFloats(n, 1.0f, 8), m = randomFloats(n, 0.1f, 9);
  std::vector<float> g = randomFloats(n, 0.5f, 10), v = randomFloats(n, 0.01f, 11), mask(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = i % 101 == 7 ? 0.0f : v[i] * v[i];
    mask[i] = v[i] == 0.0f ? 0.0f : 1.0f;
  }
  device::AdamParams a;
  a.lr = 1e-3f;
  a.weightDecay = 0.01f;
  DeviceBuffer dp = toDevice(p), dm = toDevice(m), dv = toDevice(v), dg = toDevice(g);
  DeviceBuffer dmask = toDevice(mask), flag = devAlloc(4);
  auto sameAll = [&](Row& row, const char* what, const DeviceBuffer& d,
                     const std::vector<float>& h) {
    std::vector<float> got = fromDevice<float>(d.data(), n);
    expectEqual(row, what, n, [&](size_t i) { return sameFloat(got[i], h[i]); });
  };
  auto upload = [&](DeviceBuffer& d, const std::vector<float>& h) {
    GPU_CHECK_CUDA(cudaMemcpy(d.data(), h.data(), n * 4, cudaMemcpyHostToDevice));
  };

  auto warmup = [&] {
    checkOk(device::warmupUpdate(dp.as<float>(), dm.as<float>(), dv.as<float>(), dg.as<float>(), n,
                                 a, b.stream),
            "warmupUpdate");
  };
  warmup();
  sync(b);
  parallelFor(n, [&](size_t lo, size_t hi) {
    ref::warmupUpdate(&p[lo], &m[lo], &v[lo], &g[lo], hi - lo, a);
  });
  Row w{"adam_warmup", "f32", n, 28.0 * n};
  sameAll(w, "p", dp, p);
  sameAll(w, "m", dm, m);
  sameAll(w, "v", dv, v);
  b.measure(w, warmup);

  upload(dp, p);
  upload(dm, m);
  upload(dv, v);
  auto blend = [&] {
    checkOk(
        device::momentumBlend(dm.as<float>(), dm.as<float>(), dg.as<float>(), n, a.beta1, b.stream),
        "momentumBlend");
  };
  blend();
  sync(b);
  parallelFor(n, [&](size_t lo, size_t hi) {
    ref::momentumBlend(&m[lo], &m[lo], &g[lo], hi - lo, a.beta1);
  });
  Row mb{"momentum_blend", "f32", n, 12.0 * n};
  sameAll(mb, "m", dm, m);
  b.measure(mb, blend);

  upload(dm, m);
  auto frozen = [&] {
    checkOk(device::frozenUpdate(dp.as<float>(), dm.as<float>(), dv.as<float>(), dmask.as<float>(),
                                 n, a, 0.0f, b.stream),
            "frozenUpdate");
  };
  frozen();
  sync(b);
  parallelFor(n, [&](size_t lo, size_t hi) {
    ref::frozenUpdate(&p[lo], &m[lo], &v[lo], &mask[lo], hi - lo, a, 0.0f);
  });
  Row fu{"frozen_update", "f32", n, 24.0 * n};
  sameAll(fu, "p", dp, p);
  sameAll(fu, "m", dm, m);
  b.measure(fu, frozen);

  auto check = [&] {
    checkOk(device::checkNonFinite(dg.data(), obcclFloat32, n, flag.as<int>(), b.stream),
            "checkNonFinite");
  };
  Row nf{"nonfinite_check", "f32", n, 4.0 * n};
  check();
  sync(b);
  bool clean = fromDevice<int>(flag.data(), 1)[0] == 0;
  float nan = std::nanf("");
  GPU_CHECK_CUDA(cudaMemcpy(dg.as<float>() + n - 1, &nan, 4, cudaMemcpyHostToDevice));
  check();
  sync(b);
  bool found = fromDevice<int>(flag.data(), 1)[0] == 1;
  GPU_CHECK_CUDA(cudaMemcpy(dg.as<float>() + n - 1, &g[n - 1], 4, cudaMemcpyHostToDevice));
  nf.ok = clean && found;
  nf.check = nf.ok ? "flag"
                   : "flag wrong (clean " + std::to_string(clean) + ", NaN found " +
                         std::to_string(found) + ")";
  b.measure(nf, check);
}

}  // namespace obccl::gpucheck
