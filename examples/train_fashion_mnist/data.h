// Fashion-MNIST in IDX format (optionally gzip-compressed), as Debian's dataset-fashion-mnist
// package installs it under /usr/share/datasets/fashion-mnist.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fmnist {

struct Dataset {
  size_t count = 0;
  size_t pixels = 0;          // 28 * 28
  std::vector<float> images;  // count * pixels, scaled to [0, 1]
  std::vector<uint8_t> labels;
};

// Loads <dir>/<prefix>-images-idx3-ubyte[.gz] and <dir>/<prefix>-labels-idx1-ubyte[.gz]
// (prefix "train" or "t10k"). Keeps the first `limit` samples when limit > 0. On failure returns
// false with a message in *error.
bool loadDataset(const std::string& dir, const std::string& prefix, size_t limit, Dataset* out,
                 std::string* error);

}  // namespace fmnist
