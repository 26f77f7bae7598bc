#include "data.h"

#include <zlib.h>

#include <cstdio>
#include <memory>

namespace fmnist {
namespace {

// Reads a whole file through zlib, which also reads files that are not compressed.
bool readFile(const std::string& base, std::vector<uint8_t>* out, std::string* error) {
  std::string path = base + ".gz";
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    path = base;
    f = gzopen(path.c_str(), "rb");
  }
  if (f == nullptr) {
    *error =
        "cannot open " + base + "[.gz] (install Debian's dataset-fashion-mnist or pass --data)";
    return false;
  }
  std::unique_ptr<gzFile_s, int (*)(gzFile)> closer(f, gzclose);
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out->insert(out->end(), buf, buf + n);
  if (n < 0) {
    int code = 0;
    *error = path + ": " + gzerror(f, &code);
    return false;
  }
  return true;
}

uint32_t bigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

bool loadDataset(const std::string& dir, const std::string& prefix, size_t limit, Dataset* out,
                 std::string* error) {
  std::vector<uint8_t> img, lab;
  const std::string imgPath = dir + "/" + prefix + "-images-idx3-ubyte";
  const std::string labPath = dir + "/" + prefix + "-labels-idx1-ubyte";
  if (!readFile(imgPath, &img, error) || !readFile(labPath, &lab, error)) return false;
  // IDX: magic 0x00000803 (ubyte, 3 dimensions) then sizes, big-endian.
  if (img.size() < 16 || bigEndian32(img.data()) != 0x803) {
    *error = imgPath + ": not an IDX3 ubyte file";
    return false;
  }
  if (lab.size() < 8 || bigEndian32(lab.data()) != 0x801) {
    *error = labPath + ": not an IDX1 ubyte file";
    return false;
  }
  size_t count = bigEndian32(img.data() + 4);
  size_t pixels = size_t{bigEndian32(img.data() + 8)} * bigEndian32(img.data() + 12);
  if (bigEndian32(lab.data() + 4) != count || img.size() != 16 + count * pixels ||
      lab.size() != 8 + count) {
    *error = prefix + ": image and label files disagree on the sample count or are truncated";
    return false;
  }
  if (limit > 0 && limit < count) count = limit;
  out->count = count;
  out->pixels = pixels;
  out->images.resize(count * pixels);
  for (size_t i = 0; i < count * pixels; ++i) out->images[i] = img[16 + i] / 255.0f;
  out->labels.assign(lab.begin() + 8, lab.begin() + 8 + count);
  return true;
}

}  // namespace fmnist
