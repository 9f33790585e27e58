// The statistics every benchmark reports: medians over rounds, and the median of per-round
// ratios (ours and the reference alternate, so a load change on a shared machine moves one
// round, not the result).
#pragma once

#include <algorithm>
#include <vector>

namespace torchclip {

inline double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Median of a[i] / b[i]; 0 when the lists are empty or of different lengths.
inline double median_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  if (b.empty() || b.size() != a.size()) return 0;
  std::vector<double> r;
  for (size_t i = 0; i < a.size(); ++i) r.push_back(a[i] / b[i]);
  return median_of(r);
}

}  // namespace torchclip
