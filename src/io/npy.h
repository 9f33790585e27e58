// NumPy's .npy format (version 1.0), for embeddings that notebooks read with np.load.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace torchclip {

/// Writes a float, half or int64 CPU tensor as a C-order .npy file (atomically).
void save_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace torchclip
