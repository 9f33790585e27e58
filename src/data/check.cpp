#include "data/check.h"

#include "util/json.h"
#include "util/progress.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace torchclip::data {
namespace {

const std::vector<double> kPercentiles = {0, 5, 25, 50, 75, 95, 100};

std::vector<double> percentiles(std::vector<double> v) {
  std::vector<double> out;
  if (v.empty()) return out;
  std::sort(v.begin(), v.end());
  for (double p : kPercentiles) out.push_back(v[static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5)]);
  return out;
}

}  // namespace

CheckReport check_dataset(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
                          LoaderOptions o, bool progress) {
  CheckReport r;
  r.source = source->describe();
  r.context_length = o.context_length();
  o.shuffle(false).drop_last(false).transform(ImageTransformOptions().image_size(8)).log_first_failures(0);
  o.max_consecutive_failures(std::numeric_limits<int64_t>::max());  // report everything, never stop
  Loader loader(source, tokenizer, o);
  loader.start_epoch(0);
  std::vector<double> widths, heights, tokens;
  Progress bar("check", source->size() > 0 ? source->size() : 0, "img");
  int64_t last = 0;
  for (Batch b; loader.next(b);) {
    for (size_t i = 0; i < b.image_sizes.size(); ++i) {
      widths.push_back(b.image_sizes[i].first);
      heights.push_back(b.image_sizes[i].second);
      tokens.push_back(b.token_counts[i]);
      r.captions_over_context += b.token_counts[i] > o.context_length();
    }
    const int64_t done = loader.stats().good + loader.stats().skipped;
    if (progress) bar.advance(done - last);
    last = done;
  }
  if (progress) bar.finish();
  r.seconds = bar.elapsed_seconds();
  r.good = loader.stats().good;
  r.skipped = loader.stats().skipped;
  r.skipped_by_reason = loader.stats().skipped_by_reason;
  r.examples = loader.stats().examples;
  r.width_pct = percentiles(widths);
  r.height_pct = percentiles(heights);
  r.tokens_pct = percentiles(tokens);
  return r;
}

std::string CheckReport::to_json() const {
  std::vector<std::string> reasons, examples_json;
  for (const auto& [k, v] : skipped_by_reason) reasons.push_back(fmt::format("{}: {}", json_quote(k), v));
  for (const auto& [k, v] : examples) {
    std::vector<std::string> q;
    for (const auto& e : v) q.push_back(json_quote(e));
    examples_json.push_back(fmt::format("{}: [{}]", json_quote(k), fmt::join(q, ", ")));
  }
  auto pct = [](const std::vector<double>& v) {
    std::vector<std::string> kv;
    for (size_t i = 0; i < v.size(); ++i) kv.push_back(fmt::format("\"p{}\": {}", kPercentiles[i], v[i]));
    return fmt::format("{{{}}}", fmt::join(kv, ", "));
  };
  return fmt::format(
      "{{\"source\": {}, \"good\": {}, \"skipped\": {}, \"skipped_by_reason\": {{{}}}, \"examples\": {{{}}}, "
      "\"image_width\": {}, \"image_height\": {}, \"caption_tokens\": {}, \"context_length\": {}, "
      "\"captions_over_context\": {}, \"seconds\": {:.3f}}}",
      json_quote(source), good, skipped, fmt::join(reasons, ", "), fmt::join(examples_json, ", "), pct(width_pct),
      pct(height_pct), pct(tokens_pct), context_length, captions_over_context, seconds);
}

std::string CheckReport::to_text() const {
  std::string s = fmt::format("{}\n  usable samples   {}\n  skipped          {}\n", source, good, skipped);
  for (const auto& [k, v] : skipped_by_reason) {
    s += fmt::format("    {:<22} {:>8}   e.g. {}\n", k, v, fmt::join(examples.at(k), ", "));
  }
  auto row = [&](const char* name, const std::vector<double>& v) {
    if (v.empty()) return;
    s += fmt::format("  {:<16} min {}  p5 {}  p25 {}  median {}  p75 {}  p95 {}  max {}\n", name, v[0], v[1], v[2], v[3],
                     v[4], v[5], v[6]);
  };
  row("image width", width_pct);
  row("image height", height_pct);
  row("caption tokens", tokens_pct);
  s += fmt::format("  captions longer than the context ({} tokens): {}\n", context_length, captions_over_context);
  return s;
}

}  // namespace torchclip::data
