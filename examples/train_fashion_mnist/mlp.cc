#include "mlp.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

namespace fmnist {

Mlp::Mlp(size_t in, size_t hidden, size_t out)
    : in_(in),
      hidden_(hidden),
      out_(out),
      params_(in * hidden + hidden + hidden * out + out, 0.0f),
      grads_(params_.size(), 0.0f) {
  w1_ = params_.data();
  b1_ = w1_ + in * hidden;
  w2_ = b1_ + hidden;
  b2_ = w2_ + hidden * out;
  gw1_ = grads_.data();
  gb1_ = gw1_ + in * hidden;
  gw2_ = gb1_ + hidden;
  gb2_ = gw2_ + hidden * out;
}

void Mlp::init(uint32_t seed) {
  // He initialisation for the ReLU layer, Glorot for the output layer, zero biases.
  std::mt19937 gen(seed);
  std::normal_distribution<float> d1(0.0f, std::sqrt(2.0f / in_));
  std::normal_distribution<float> d2(0.0f, std::sqrt(2.0f / (hidden_ + out_)));
  std::fill(params_.begin(), params_.end(), 0.0f);
  for (size_t i = 0; i < in_ * hidden_; ++i) w1_[i] = d1(gen);
  for (size_t i = 0; i < hidden_ * out_; ++i) w2_[i] = d2(gen);
}

void Mlp::forward(const float* x, const uint8_t* labels, size_t batch, double* lossSum,
                  double* correct) {
  h_.resize(batch * hidden_);
  z_.resize(batch * out_);
  const int b = static_cast<int>(batch), n = static_cast<int>(in_), h = static_cast<int>(hidden_),
            o = static_cast<int>(out_);
  // H = relu(X W1 + b1)
  for (size_t r = 0; r < batch; ++r) std::copy(b1_, b1_ + hidden_, &h_[r * hidden_]);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, h, n, 1.0f, x, n, w1_, h, 1.0f,
              h_.data(), h);
  for (auto& v : h_) v = v > 0.0f ? v : 0.0f;
  // Z = H W2 + b2
  for (size_t r = 0; r < batch; ++r) std::copy(b2_, b2_ + out_, &z_[r * out_]);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, o, h, 1.0f, h_.data(), h, w2_, o, 1.0f,
              z_.data(), o);
  // Softmax in place, with the loss and accuracy.
  for (size_t r = 0; r < batch; ++r) {
    float* z = &z_[r * out_];
    size_t best = std::max_element(z, z + out_) - z;
    float mx = z[best], sum = 0.0f;
    for (size_t k = 0; k < out_; ++k) sum += (z[k] = std::exp(z[k] - mx));
    for (size_t k = 0; k < out_; ++k) z[k] /= sum;
    *lossSum -= std::log(std::max(z[labels[r]], 1e-30f));
    *correct += best == labels[r];
  }
}

float Mlp::forwardBackward(const float* x, const uint8_t* labels, size_t batch) {
  double loss = 0, correct = 0;
  forward(x, labels, batch, &loss, &correct);
  const int b = static_cast<int>(batch), n = static_cast<int>(in_), h = static_cast<int>(hidden_),
            o = static_cast<int>(out_);
  // dZ = (softmax - onehot) / batch, stored over z_.
  const float scale = 1.0f / batch;
  for (size_t r = 0; r < batch; ++r) {
    z_[r * out_ + labels[r]] -= 1.0f;
    for (size_t k = 0; k < out_; ++k) z_[r * out_ + k] *= scale;
  }
  // dW2 = H^T dZ, db2 = column sums of dZ.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h, o, b, 1.0f, h_.data(), h, z_.data(), o,
              0.0f, gw2_, o);
  std::fill(gb2_, gb2_ + out_, 0.0f);
  for (size_t r = 0; r < batch; ++r)
    for (size_t k = 0; k < out_; ++k) gb2_[k] += z_[r * out_ + k];
  // dH = dZ W2^T, masked by the ReLU.
  dh_.resize(batch * hidden_);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, h, o, 1.0f, z_.data(), o, w2_, o, 0.0f,
              dh_.data(), h);
  for (size_t i = 0; i < batch * hidden_; ++i)
    if (h_[i] <= 0.0f) dh_[i] = 0.0f;
  // dW1 = X^T dH, db1 = column sums of dH.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, h, b, 1.0f, x, n, dh_.data(), h, 0.0f,
              gw1_, h);
  std::fill(gb1_, gb1_ + hidden_, 0.0f);
  for (size_t r = 0; r < batch; ++r)
    for (size_t k = 0; k < hidden_; ++k) gb1_[k] += dh_[r * hidden_ + k];
  return static_cast<float>(loss / batch);
}

void Mlp::evaluate(const float* x, const uint8_t* labels, size_t batch, double* lossSum,
                   double* correct) {
  forward(x, labels, batch, lossSum, correct);
}

}  // namespace fmnist
