// Dataset preparation: Fashion-MNIST (Xiao et al. 2017) from its IDX files into an image-caption
// dataset with a zero-shot evaluation split.
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torchclip::data {

struct PrepareFashionMnistOptions {
  /// Folder with train-images-idx3-ubyte.gz and friends (Debian's dataset-fashion-mnist).
  TORCH_ARG(std::string, source) = "/usr/share/datasets/fashion-mnist";
  TORCH_ARG(std::string, out) = "data/fashion-mnist";
  /// "csv" (PNG files plus train.csv/test.csv) or "wds" (tar shards as well).
  TORCH_ARG(std::string, format) = "csv";
  TORCH_ARG(int64_t, shard_size) = 5000;
  TORCH_ARG(uint64_t, seed) = 0;
};

struct PrepareResult {
  int64_t train = 0, test = 0;
  std::vector<std::string> files;  // what was written, for the user
};

/// The ten class names, in label order, as written to classes.txt.
const std::vector<std::string>& fashion_mnist_classes();
/// Caption templates ("{}" is the class name): training and evaluation sets are disjoint.
const std::vector<std::string>& fashion_mnist_train_templates();
const std::vector<std::string>& fashion_mnist_eval_templates();

/// Writes images/{train,test}/NNNNN.png, train.csv (filepath, title, label), test.csv (the same,
/// titles from the evaluation templates), classes.txt, templates_train.txt, templates_eval.txt,
/// and with format "wds" shards/{train,test}-NNNNNN.tar. Keeps the published train/test split.
PrepareResult prepare_fashion_mnist(const PrepareFashionMnistOptions& options);

/// Reads an IDX file (optionally gzip'd): dims and the uint8 payload. Throws naming the file.
std::vector<uint8_t> read_idx(const std::string& path, std::vector<int64_t>& dims);

}  // namespace torchclip::data
