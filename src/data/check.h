// `torchclip data check`: reads a whole dataset the way training does and reports what is usable.
#pragma once

#include "data/loader.h"

#include <map>
#include <string>
#include <vector>

namespace torchclip::data {

struct CheckReport {
  std::string source;
  int64_t good = 0, skipped = 0;
  std::map<std::string, int64_t> skipped_by_reason;
  std::map<std::string, std::vector<std::string>> examples;
  /// Percentiles (0, 5, 25, 50, 75, 95, 100) of image width, height and caption length in tokens
  /// (with start and end markers).
  std::vector<double> width_pct, height_pct, tokens_pct;
  int64_t captions_over_context = 0;  // captions that will be truncated
  int64_t context_length = 0;
  double seconds = 0;
  std::string to_json() const;
  std::string to_text() const;
};

/// Decodes every image and tokenises every caption of `source` (workers threads, no shuffling).
CheckReport check_dataset(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
                          LoaderOptions options, bool progress = true);

}  // namespace torchclip::data
