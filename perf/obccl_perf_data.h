// obccl_perf's data: deterministic per-rank input values, element conversion for every
// datatype, and the expected result of each collective computed locally, so a run can count
// wrong elements (#wrong) without trusting the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "obccl/obccl.h"

namespace obccl::perf {

enum class Coll { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kBroadcast, kCompressed };

size_t typeSize(obcclDataType_t t);
bool isFloat(obcclDataType_t t);
// Parsers for -d, -o and -t; false for an unknown name.
bool parseType(const std::string& s, obcclDataType_t* t);
bool parseOp(const std::string& s, obcclRedOp_t* op);
bool parseColl(const std::string& s, Coll* c);
const char* typeName(obcclDataType_t t);
const char* opName(obcclRedOp_t op);
const char* collName(Coll c);

// Element i of a buffer of type t, as a double (exact for every value obccl_perf generates).
double loadElement(obcclDataType_t t, const void* buf, size_t i);
// Stores v (rounded to nearest even for fp16/bf16; integers wrap as two's complement).
void storeElement(obcclDataType_t t, void* buf, size_t i, double v);

// The input value of element i on `rank`, chosen so that sums, products, maxima and minima of
// up to 16 ranks are exact in every datatype (small integers; powers of two for products).
double inputValue(int rank, uint64_t i, obcclRedOp_t op, obcclDataType_t t);
// The exact reduction over ranks 0..nranks-1 of inputValue(rank, i), wrapped to t's range for
// integer types; avg divides the sum by nranks.
double reducedValue(int nranks, uint64_t i, obcclRedOp_t op, obcclDataType_t t);
// How far an element may be from the expected value: 0 except where the result is rounded
// (avg, and the compressed allreduce's floating-point scales).
double tolerance(obcclDataType_t t, obcclRedOp_t op, double expected);

// The layout of one measurement: what `size` bytes mean for a collective (nccl-tests' rules).
struct Shape {
  size_t bytes = 0;      // the "size" column
  size_t count = 0;      // the "count" column: bytes / element size
  size_t apiCount = 0;   // the count argument of the call
  size_t sendElems = 0;  // elements in the send buffer
  size_t recvElems = 0;  // elements in the receive buffer
};
// Rounds `bytes` down to what the collective can move over nranks and derives the counts.
Shape shapeFor(Coll c, size_t bytes, obcclDataType_t t, int nranks);
// nccl-tests' bus bandwidth factor: busbw = algbw * factor.
double busFactor(Coll c, int nranks);

// Fills this rank's send buffer (and the receive buffer with a marker that must be overwritten).
void fillInputs(Coll c, const Shape& s, obcclDataType_t t, obcclRedOp_t op, int rank, int root,
                void* send, void* recv);
// Counts elements of this rank's receive buffer that differ from the expected result.
uint64_t countWrong(Coll c, const Shape& s, obcclDataType_t t, obcclRedOp_t op, int rank,
                    int nranks, int root, const void* recv);

// Compressed allreduce: the input (+-2^(rank mod 16), random signs) and a local simulation of
// the whole algorithm from zeroed error buffers (DESIGN.md section 4).
void fillCompressedInput(const Shape& s, obcclDataType_t t, int rank, void* send);
uint64_t countWrongCompressed(const Shape& s, obcclDataType_t t, int nranks, const void* recv);

}  // namespace obccl::perf
