#pragma once
// Owning wrappers of cuDNN descriptors (destroyed with their owner; not copyable) and the packed
// tensor descriptor both convolution kernels need.
#include <vector>

#include "kernels/cuda/cuda_common.hpp"

namespace troupe::kernels::cuda {

template <class T, cudnnStatus_t (*Destroy)(T)>
class cudnn_descriptor {
 public:
  cudnn_descriptor() = default;
  cudnn_descriptor(const cudnn_descriptor&) = delete;
  cudnn_descriptor& operator=(const cudnn_descriptor&) = delete;
  ~cudnn_descriptor() {
    if (d_) (void)Destroy(d_);
  }
  T get() const { return d_; }
  T* out() { return &d_; }

 private:
  T d_ = nullptr;
};
using tensor_desc = cudnn_descriptor<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>;
using filter_desc = cudnn_descriptor<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>;
using conv_desc = cudnn_descriptor<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>;
using act_desc = cudnn_descriptor<cudnnActivationDescriptor_t, cudnnDestroyActivationDescriptor>;

/// Creates `d` as a packed row-major tensor of `dims` (outermost first).
inline status set_packed_tensor_desc(tensor_desc& d, cudnnDataType_t t,
                                     const std::vector<int>& dims) {
  TROUPE_CUDA_CHECK(cudnnCreateTensorDescriptor(d.out()));
  std::vector<int> strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  TROUPE_CUDA_CHECK(cudnnSetTensorNdDescriptor(d.get(), t, static_cast<int>(dims.size()),
                                               dims.data(), strides.data()));
  return status::ok();
}

}  // namespace troupe::kernels::cuda
