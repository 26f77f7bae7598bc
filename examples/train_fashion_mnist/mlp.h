// A 784-256-10 multilayer perceptron (ReLU, softmax cross-entropy) whose parameters and
// gradients are each one flat fp32 buffer, so one 1-bit Adam helper covers the whole model.
// Matrix products go through OpenBLAS (cblas_sgemm).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace fmnist {

class Mlp {
 public:
  Mlp(size_t in, size_t hidden, size_t out);
  size_t paramCount() const { return params_.size(); }
  float* params() { return params_.data(); }
  const float* grads() const { return grads_.data(); }
  // Same seed, same weights: every rank starts from identical parameters.
  void init(uint32_t seed);
  // Mean loss over the batch; grads() receives the gradient of that mean.
  float forwardBackward(const float* x, const uint8_t* labels, size_t batch);
  // Adds the summed loss to *lossSum and the number of correct predictions to *correct.
  void evaluate(const float* x, const uint8_t* labels, size_t batch, double* lossSum,
                double* correct);

 private:
  // Logits into z_ and per-sample loss into *lossSum (and correct predictions); keeps h_.
  void forward(const float* x, const uint8_t* labels, size_t batch, double* lossSum,
               double* correct);
  size_t in_, hidden_, out_;
  std::vector<float> params_, grads_;
  float *w1_, *b1_, *w2_, *b2_;      // views into params_
  float *gw1_, *gb1_, *gw2_, *gb2_;  // views into grads_
  std::vector<float> h_, z_, dh_;
};

}  // namespace fmnist
