#include "perf/obccl_perf_data.h"

#include <cmath>
#include <cstring>

namespace obccl::perf {
namespace {

struct TypeEntry {
  const char* name;
  obcclDataType_t type;
  size_t size;
};
const TypeEntry kTypes[] = {{"float", obcclFloat32, 4},     {"half", obcclFloat16, 2},
                            {"bfloat16", obcclBfloat16, 2}, {"double", obcclFloat64, 8},
                            {"int32", obcclInt32, 4},       {"int64", obcclInt64, 8},
                            {"uint8", obcclUint8, 1}};
const char* const kOps[] = {"sum", "prod", "max", "min", "avg"};
const char* const kColls[] = {"allreduce", "allgather", "reducescatter",
                              "alltoall",  "broadcast", "compressed_allreduce"};
// Written into receive buffers before a call; no input value equals it.
constexpr double kMarker = 99;

uint16_t floatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  uint32_t h, rem, halfway;
  if (e <= 0) {  // subnormal half: h * 2^-24
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    int shift = 14 - e;
    h = mant >> shift;
    rem = mant & ((1u << shift) - 1);
    halfway = 1u << (shift - 1);
  } else {
    h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    rem = mant & 0x1fffu;
    halfway = 0x1000u;
  }
  if (rem > halfway || (rem == halfway && (h & 1))) ++h;  // a carry may reach infinity: right
  return static_cast<uint16_t>(sign | h);
}

float halfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  uint32_t x =
      exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t floatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bf16ToFloat(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// Wraps an exact integer result to the range of t, as the library's integer arithmetic does.
double wrapInteger(obcclDataType_t t, long long v) {
  switch (t) {
    case obcclInt32:
      return static_cast<int32_t>(static_cast<uint32_t>(v));
    case obcclUint8:
      return static_cast<uint8_t>(v);
    default:
      return static_cast<double>(v);
  }
}

double epsilonOf(obcclDataType_t t) {
  switch (t) {
    case obcclFloat16:
      return 1.0 / 1024;
    case obcclBfloat16:
      return 1.0 / 128;
    case obcclFloat32:
      return 1.0 / (1 << 23);
    case obcclFloat64:
      return 1.0 / (1LL << 52);
    default:
      return 0;
  }
}

bool reduces(Coll c) { return c == Coll::kAllReduce || c == Coll::kReduceScatter; }

}  // namespace

size_t typeSize(obcclDataType_t t) {
  for (const auto& e : kTypes)
    if (e.type == t) return e.size;
  return 0;
}
bool isFloat(obcclDataType_t t) {
  return t == obcclFloat32 || t == obcclFloat16 || t == obcclBfloat16 || t == obcclFloat64;
}
bool parseType(const std::string& s, obcclDataType_t* t) {
  for (const auto& e : kTypes)
    if (s == e.name) return *t = e.type, true;
  if (s == "float32" || s == "fp32") return *t = obcclFloat32, true;
  if (s == "float16" || s == "fp16") return *t = obcclFloat16, true;
  if (s == "bf16") return *t = obcclBfloat16, true;
  return false;
}
bool parseOp(const std::string& s, obcclRedOp_t* op) {
  for (int i = 0; i < obcclNumOps; ++i)
    if (s == kOps[i]) return *op = static_cast<obcclRedOp_t>(i), true;
  return false;
}
bool parseColl(const std::string& s, Coll* c) {
  for (int i = 0; i <= static_cast<int>(Coll::kCompressed); ++i)
    if (s == kColls[i]) return *c = static_cast<Coll>(i), true;
  if (s == "compressed") return *c = Coll::kCompressed, true;
  return false;
}
const char* typeName(obcclDataType_t t) {
  for (const auto& e : kTypes)
    if (e.type == t) return e.name;
  return "?";
}
const char* opName(obcclRedOp_t op) { return op >= 0 && op < obcclNumOps ? kOps[op] : "?"; }
const char* collName(Coll c) { return kColls[static_cast<int>(c)]; }

double loadElement(obcclDataType_t t, const void* buf, size_t i) {
  switch (t) {
    case obcclFloat32:
      return static_cast<const float*>(buf)[i];
    case obcclFloat16:
      return halfToFloat(static_cast<const uint16_t*>(buf)[i]);
    case obcclBfloat16:
      return bf16ToFloat(static_cast<const uint16_t*>(buf)[i]);
    case obcclFloat64:
      return static_cast<const double*>(buf)[i];
    case obcclInt32:
      return static_cast<const int32_t*>(buf)[i];
    case obcclInt64:
      return static_cast<double>(static_cast<const int64_t*>(buf)[i]);
    case obcclUint8:
      return static_cast<const uint8_t*>(buf)[i];
    default:
      return 0;
  }
}

void storeElement(obcclDataType_t t, void* buf, size_t i, double v) {
  switch (t) {
    case obcclFloat32:
      static_cast<float*>(buf)[i] = static_cast<float>(v);
      break;
    case obcclFloat16:
      static_cast<uint16_t*>(buf)[i] = floatToHalf(static_cast<float>(v));
      break;
    case obcclBfloat16:
      static_cast<uint16_t*>(buf)[i] = floatToBf16(static_cast<float>(v));
      break;
    case obcclFloat64:
      static_cast<double*>(buf)[i] = v;
      break;
    case obcclInt32:
      static_cast<int32_t*>(buf)[i] = static_cast<int32_t>(static_cast<long long>(v));
      break;
    case obcclInt64:
      static_cast<int64_t*>(buf)[i] = static_cast<int64_t>(v);
      break;
    case obcclUint8:
      static_cast<uint8_t*>(buf)[i] = static_cast<uint8_t>(static_cast<long long>(v));
      break;
    default:
      break;
  }
}

double inputValue(int rank, uint64_t i, obcclRedOp_t op, obcclDataType_t t) {
  const uint64_t r = static_cast<uint64_t>(rank);
  if (op == obcclProd) {
    if ((i + 3 * r) % 7 == 0) return 2;
    if (t != obcclUint8 && (i + r) % 5 == 0) return -1;
    return 1;
  }
  double v = static_cast<double>((r * 7 + i * 13) % 17);  // 0..16
  return t == obcclUint8 ? v : v - 8;
}

double reducedValue(int nranks, uint64_t i, obcclRedOp_t op, obcclDataType_t t) {
  long long acc = op == obcclProd ? 1 : 0;
  for (int r = 0; r < nranks; ++r) {
    long long v = static_cast<long long>(inputValue(r, i, op, t));
    if (r == 0 && (op == obcclMax || op == obcclMin)) acc = v;
    switch (op) {
      case obcclProd:
        acc *= v;
        break;
      case obcclMax:
        acc = v > acc ? v : acc;
        break;
      case obcclMin:
        acc = v < acc ? v : acc;
        break;
      default:
        acc += v;
    }
  }
  double exact = isFloat(t) ? static_cast<double>(acc) : wrapInteger(t, acc);
  return op == obcclAvg ? exact / nranks : exact;
}

double tolerance(obcclDataType_t t, obcclRedOp_t op, double expected) {
  if (op != obcclAvg) return 0;
  if (!isFloat(t)) return 1;  // integer averages may truncate or round
  return 2 * epsilonOf(t) * std::fabs(expected);
}

Shape shapeFor(Coll c, size_t bytes, obcclDataType_t t, int nranks) {
  Shape s;
  const size_t ts = typeSize(t), n = static_cast<size_t>(nranks);
  s.count = bytes / ts;
  bool perRank = c == Coll::kAllGather || c == Coll::kReduceScatter || c == Coll::kAllToAll;
  if (perRank) s.count -= s.count % n;
  s.bytes = s.count * ts;
  s.apiCount = perRank ? s.count / n : s.count;
  s.sendElems = c == Coll::kAllGather ? s.apiCount : s.count;
  s.recvElems = c == Coll::kReduceScatter ? s.apiCount : s.count;
  return s;
}

double busFactor(Coll c, int nranks) {
  const double n = nranks;
  switch (c) {
    case Coll::kAllReduce:
    case Coll::kCompressed:
      return 2 * (n - 1) / n;
    case Coll::kBroadcast:
      return 1;
    default:
      return (n - 1) / n;
  }
}

void fillInputs(Coll c, const Shape& s, obcclDataType_t t, obcclRedOp_t op, int rank, int root,
                void* send, void* recv) {
  const obcclRedOp_t vop = reduces(c) ? op : obcclSum;
  const int source = c == Coll::kBroadcast ? root : rank;
  for (size_t i = 0; i < s.sendElems; ++i) storeElement(t, send, i, inputValue(source, i, vop, t));
  for (size_t i = 0; i < s.recvElems; ++i) storeElement(t, recv, i, kMarker);
}

uint64_t countWrong(Coll c, const Shape& s, obcclDataType_t t, obcclRedOp_t op, int rank,
                    int nranks, int root, const void* recv) {
  const size_t block = s.apiCount;
  uint64_t wrong = 0;
  for (size_t i = 0; i < s.recvElems; ++i) {
    double want;
    switch (c) {
      case Coll::kAllReduce:
        want = reducedValue(nranks, i, op, t);
        break;
      case Coll::kReduceScatter:
        want = reducedValue(nranks, rank * block + i, op, t);
        break;
      case Coll::kBroadcast:
        want = inputValue(root, i, obcclSum, t);
        break;
      case Coll::kAllGather:  // block q comes from rank q
        want = inputValue(static_cast<int>(i / block), i % block, obcclSum, t);
        break;
      case Coll::kAllToAll:  // block q is rank q's block for this rank
        want = inputValue(static_cast<int>(i / block), rank * block + i % block, obcclSum, t);
        break;
      default:
        want = 0;
    }
    double got = loadElement(t, recv, i);
    if (!(std::fabs(got - want) <= tolerance(t, reduces(c) ? op : obcclSum, want))) ++wrong;
  }
  return wrong;
}

}  // namespace obccl::perf
