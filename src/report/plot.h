// A PNG of a run's curves (loss, learning rate, evaluation metrics), drawn with OpenCV so no
// Python is needed to look at a run.
#pragma once

#include <string>

namespace torchclip {

/// Reads metrics.jsonl and writes a three-panel plot. Throws naming a file it cannot read/write.
void plot_metrics(const std::string& metrics_jsonl, const std::string& png_path);

}  // namespace torchclip
