// The small model the tool and service tests share: four colour classes of noisy 16x16 squares
// under DIR/imgs/<colour>/, captioned "a photo of a <colour> square" in DIR/train.csv, and a
// 2-layer ViT trained on them for a few seconds (150 steps, one thread).
#pragma once

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "support.h"

namespace torchclip::test {

inline const char* const kColours[] = {"red", "green", "blue", "yellow"};
inline const cv::Scalar kColoursBgr[] = {{40, 40, 220}, {40, 200, 40}, {220, 60, 40}, {40, 220, 230}};

/// Writes the images, train.csv, templates.txt, model.yaml and train.yaml under `d` and trains
/// into d/run. Returns the checkpoint folder, or "" with the trainer's output in `log`.
inline std::string train_colour_model(const std::filesystem::path& d, std::string& log) {
  namespace fs = std::filesystem;
  std::ofstream csv(d / "train.csv");
  csv << "filepath,title\n";
  for (int c = 0; c < 4; ++c) {
    fs::create_directories(d / "imgs" / kColours[c]);
    for (int i = 0; i < 24; ++i) {
      cv::Mat m(16, 16, CV_8UC3, kColoursBgr[c]);
      cv::Mat noise(16, 16, CV_8UC3);
      cv::randu(noise, 0, 50);
      m = m + noise;
      const std::string rel = std::string("imgs/") + kColours[c] + "/" + std::to_string(i) + ".png";
      cv::imwrite((d / rel).string(), m);
      csv << rel << ",\"a photo of a " << kColours[c] << " square\"\n";
    }
  }
  csv.close();
  std::ofstream(d / "templates.txt") << "a photo of a {} square\n";
  std::ofstream(d / "model.yaml") << "embed_dim: 16\nvision_cfg: {image_size: 16, patch_size: 8, layers: 2, width: 32, head_width: 16}\n"
                                     "text_cfg: {context_length: 12, width: 32, heads: 2, layers: 2}\n";
  std::ofstream(d / "train.yaml") << "model: " << (d / "model.yaml").string() << "\ndata:\n  train: " << (d / "train.csv").string()
                                  << "\n  batch_size: 32\n  workers: 2\noptim: {lr: 3.0e-3, weight_decay: 0.0}\n"
                                  // One thread: ctest -j2 runs two of these fixtures at once, and two
                                  // 2-thread OpenMP teams on 2 cores spin-wait each other to a crawl.
                                  << "schedule: {warmup_steps: 5}\ntrain: {steps: 150, threads: 1, checkpoint_every: 150}\n";
  auto r = run_cli("train --config " + (d / "train.yaml").string() + " --out " + (d / "run").string());
  log = r.out;
  if (r.code != 0) return "";
  std::string model;
  for (const auto& e : fs::directory_iterator(d / "run" / "checkpoints")) model = e.path().string();
  return model;
}

}  // namespace torchclip::test
