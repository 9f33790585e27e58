// A zero-shot confusion matrix as CSV and as a PNG heatmap.
#pragma once

#include "eval/zeroshot.h"

#include <string>
#include <vector>

namespace torchclip {

/// The confusion matrix as CSV (header row of predicted classes, one row per true class).
void write_confusion_csv(const ZeroShotReport& r, const std::vector<std::string>& classes, const std::string& path);
/// A heatmap of the row-normalised confusion matrix with class names and counts.
void write_confusion_png(const ZeroShotReport& r, const std::vector<std::string>& classes, const std::string& path);

}  // namespace torchclip
