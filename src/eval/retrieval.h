// Image<->text retrieval metrics as OpenCLIP's get_clip_metrics reports them, computed in chunks
// so a large evaluation set never needs its whole similarity matrix in memory.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

namespace torchclip {

/// Retrieval metrics between paired features [N, E] (row i of each is a pair), under OpenCLIP's
/// names: image_to_text_R@{1,5,10}, text_to_image_R@{1,5,10}, *_mean_rank, *_median_rank.
/// A row's rank is its pair's place in a stable descending sort of the row's scores (ties go to
/// the smaller index), as open_clip's get_clip_metrics with a stable argsort; median as np.median.
std::map<std::string, double> retrieval_metrics(const at::Tensor& image_features, const at::Tensor& text_features,
                                                int64_t chunk = 1024);

}  // namespace torchclip
