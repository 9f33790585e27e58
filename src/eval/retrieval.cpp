#include "eval/retrieval.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

namespace torchclip {

std::map<std::string, double> retrieval_metrics(const at::Tensor& img, const at::Tensor& txt, int64_t chunk) {
  TORCH_CHECK(img.sizes() == txt.sizes() && img.dim() == 2, "retrieval: expected paired features [N, E]");
  const int64_t N = img.size(0);
  std::map<std::string, double> out;
  auto direction = [&](const at::Tensor& q, const at::Tensor& k, const std::string& name) {
    std::vector<at::Tensor> ranks;
    const auto index = q.options().dtype(at::kLong);
    auto cols = at::arange(N, index).unsqueeze(0);                                   // [1, N]
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t e = std::min(N, s + chunk);
      auto rows = at::arange(s, e, index).unsqueeze(1);                              // [chunk, 1]
      auto sims = at::matmul(q.slice(0, s, e), k.t());                               // [chunk, N]
      auto own = sims.gather(1, rows);                                               // [chunk, 1]
      // 0-based rank of the pair in a stable descending sort: every candidate scoring higher,
      // and every tied candidate with a smaller index (a duplicate caption never counts as found
      // for both of its images).
      auto ahead = sims.gt(own).logical_or(sims.eq(own).logical_and(cols.lt(rows)));  // [chunk, N]
      ranks.push_back(ahead.sum(1));                                                 // [chunk]
    }
    auto r = at::cat(ranks).to(at::kCPU, at::kDouble);  // [N]
    for (int k_ : {1, 5, 10}) out[fmt::format("{}_R@{}", name, k_)] = r.lt(k_).to(at::kDouble).mean().item<double>();
    out[name + "_mean_rank"] = r.mean().item<double>() + 1;
    // np.floor(np.median(ranks)) + 1: the median of an even count is the mean of the middle two.
    auto sorted = std::get<0>(r.sort());
    const double median = N % 2 ? sorted[N / 2].item<double>()
                                : 0.5 * (sorted[N / 2 - 1].item<double>() + sorted[N / 2].item<double>());
    out[name + "_median_rank"] = std::floor(median) + 1;
  };
  direction(img, txt, "image_to_text");
  direction(txt, img, "text_to_image");
  return out;
}

}  // namespace torchclip
