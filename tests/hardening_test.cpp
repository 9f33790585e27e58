// The defects of the hardening issue, one test per class, each against the library piece that
// used to crash, hang or give a silently wrong result: reading a folder as a file, temporaries
// of interrupted writes, two writers of one run folder, CSV quoting, labels past the class list,
// BMP, invalid UTF-8 and NaN in JSON, hostile safetensors headers, an index changed under a
// reader, mis-typed or non-finite weights, fingerprints, unbounded config values and resumable
// metrics. The command-line cases are in cli_test.cpp and tools_cli_test.cpp.
#include "config/emit.h"
#include "config/model_config.h"
#include "config/train_config.h"
#include "data/image.h"
#include "data/pipeline.h"
#include "data/source.h"
#include "eval/zeroshot.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/model_dir.h"
#include "search/index.h"
#include "search/scan.h"
#include "train/metrics_log.h"
#include "util/json.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <sys/resource.h>
#include <yaml-cpp/yaml.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "support.h"

namespace torchclip {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- files -------------------------------------------------------------------------------

TEST(Files, AFolderOrAnEmptyPathIsRefusedByNameNotWithALengthError) {
  auto dir = test::temp_dir("folder_as_file");
  // Before: std::length_error "basic_string::_M_replace_aux" (a folder's size reads as -1).
  auto m = test::error_of<std::runtime_error>([&] { read_file(dir.string()); });
  EXPECT_TRUE(contains(m, "is a folder, not a file")) << m;
  m = test::error_of<std::runtime_error>([&] { read_file(""); });
  EXPECT_TRUE(contains(m, "the path is empty")) << m;
  m = test::error_of<SafetensorsError>([&] { map_safetensors(dir.string()); });
  EXPECT_TRUE(contains(m, "is a folder")) << m;

  // In the data pipeline the same paths are unusable samples with a reason, not a dead run.
  data::RawSample folder;
  folder.image_path = dir.string();
  auto e = test::error_of<data::SampleError>([&] { data::read_image_bytes(folder); });
  EXPECT_TRUE(contains(e, "is a folder")) << e;
  try {
    data::read_image_bytes(folder);
  } catch (const data::SampleError& err) {
    EXPECT_EQ(err.reason, "image_is_folder");
  }
  fs::remove_all(dir);
}

/// In a forked child: with a 4 KiB file size limit, writing 100 KB over `p` fails naming it,
/// leaves the old content and no temporary.
bool write_fails_cleanly_when_full(const fs::path& dir, const std::string& p) {
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit limit{4096, 4096};
  ::setrlimit(RLIMIT_FSIZE, &limit);
  bool failed = false;
  try {
    write_file_atomic(p, std::string(100000, 'x'));
  } catch (const std::runtime_error& err) {
    failed = contains(err.what(), p);
  }
  return failed && read_file(p) == "old" && names_in(dir) == std::vector<std::string>{"keep.txt", "x.json"};
}

TEST(Files, WritersUseUniqueTemporariesAndAFullDiskLeavesNone) {
  auto dir = test::temp_dir("temps");
  const std::string p = (dir / "x.json").string();
  int fd1 = -1, fd2 = -1;
  const std::string t1 = make_temp_beside(p, fd1), t2 = make_temp_beside(p, fd2);
  EXPECT_NE(t1, t2);  // before: both were x.json.tmp, so two writers corrupted each other
  ::close(fd1);
  ::close(fd2);
  EXPECT_TRUE(is_temp_name(fs::path(t1).filename().string(), "x.json"));
  EXPECT_TRUE(is_temp_name("step-00000004.tmp", "step-00000004"));
  EXPECT_FALSE(is_temp_name("notes.tmpl"));
  EXPECT_FALSE(is_temp_name(".tmp"));
  EXPECT_FALSE(is_temp_name("report.tmp.bak"));  // not what mkstemp makes
  EXPECT_FALSE(is_temp_name("y.json.tmp.Ab12Cd", "x.json"));  // another file's
  fs::create_directories(dir / "step-00000004.tmp");
  std::ofstream(dir / "keep.txt") << "k";
  std::ofstream(dir / "mine.tmp") << "the user's own file";  // a run folder may hold the user's files
  EXPECT_EQ(remove_stale_temps(dir.string(), {"x.json", "step-00000004"}), 3);
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"keep.txt", "mine.tmp"}));
  fs::remove(dir / "mine.tmp");

  // A real "disk full": a file size limit makes write() fail with EFBIG. The write fails with a
  // message naming the file, the old content survives, and no temporary is left behind.
  write_file_atomic(p, "old");
  EXPECT_EXIT(std::_Exit(write_fails_cleanly_when_full(dir, p) ? 0 : 1), ::testing::ExitedWithCode(0), "");
  fs::remove_all(dir);
}

TEST(Files, ARunFolderHasOneWriterAtATime) {
  auto dir = test::temp_dir("lock");
  {
    FolderLock first(dir.string());
    auto m = test::error_of<std::runtime_error>([&] { FolderLock second(dir.string()); });
    EXPECT_TRUE(contains(m, "another process is using this folder")) << m;
    EXPECT_TRUE(contains(m, "pid " + std::to_string(::getpid()))) << m;
  }
  FolderLock again(dir.string());  // released with the first
  fs::remove_all(dir);
}

// ---- CSV ---------------------------------------------------------------------------------

TEST(Csv, AMalformedQuoteIsOneCountedRowAndSwallowsNothing) {
  // Row 2's closing quote is doubled, so it reads as an escaped quote and the field runs on.
  // Before: rows 3 and 4 disappeared into row 2's caption, uncounted.
  const auto rows = data::parse_csv("filepath,title\na.png,\"a caption\"\" stray\nb.png,second\nc.png,\"third\"\n", ',');
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].line, 2);
  EXPECT_FALSE(rows[1].malformed.empty());
  EXPECT_EQ(rows[2].fields, (std::vector<std::string>{"b.png", "second"}));
  EXPECT_EQ(rows[2].line, 3);
  EXPECT_EQ(rows[3].fields, (std::vector<std::string>{"c.png", "third"}));
  EXPECT_TRUE(rows[3].malformed.empty());
  // Text after a closing quote on one line: that row is malformed, the next one intact.
  const auto one = data::parse_csv("a,\"x\" y,1\nb,z,2\n", ',');
  ASSERT_EQ(one.size(), 2u);
  EXPECT_TRUE(contains(one[0].malformed, "after the closing quote")) << one[0].malformed;
  EXPECT_EQ(one[1].fields, (std::vector<std::string>{"b", "z", "2"}));
  // A row already malformed on its first line whose later quote runs on: re-read all the same.
  const auto two = data::parse_csv("a,\"x\" y,\"z\nb,c\nd,\"e\" f\n", ',');
  ASSERT_EQ(two.size(), 3u);
  EXPECT_FALSE(two[0].malformed.empty());
  EXPECT_EQ(two[1].fields, (std::vector<std::string>{"b", "c"}));
  EXPECT_FALSE(two[2].malformed.empty());
  // RFC 4180 is still read as before: quoted separators, doubled quotes, line breaks.
  const auto ok = data::parse_csv("a,\"x, \"\"y\"\"\nz\",1\n", ',');
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_TRUE(ok[0].malformed.empty());
  EXPECT_EQ(ok[0].fields[1], "x, \"y\"\nz");
}

TEST(Csv, EmptyPathsAreCountedAndLabelsPastTheClassListAreRefused) {
  auto dir = test::temp_dir("csv_labels");
  std::ofstream(dir / "d.csv") << "filepath,title,label\na.png,one,0\n,two,1\n\"x\" y,three,1\nb.png,four,2\n";
  auto src = data::csv_source((dir / "d.csv").string(), data::CsvOptions().label_key("label"));
  auto stream = src->open(data::StreamSpec{0, 0, 0, 1, 0, 1, false});
  std::vector<std::string> reasons;
  for (data::RawSample s; stream->next(s);) reasons.push_back(s.error_reason);
  EXPECT_EQ(reasons, (std::vector<std::string>{"", "csv_empty_path", "csv_malformed", ""}));
  // Before: zeroshot indexed its class list with label 2 of 2 classes (a segfault).
  auto m = test::error_of<std::runtime_error>(
      [&] { data::csv_source((dir / "d.csv").string(), data::CsvOptions().label_key("label").num_classes(2)); });
  EXPECT_TRUE(contains(m, "d.csv:5: label 2 is outside [0, 1]")) << m;
  m = test::error_of<std::runtime_error>([] {
    zero_shot_report(at::rand({2, 3}), {0, 3}, {"shard.tar:k1", "shard.tar:k2"});
  });
  EXPECT_TRUE(contains(m, "shard.tar:k2: label 3 is outside [0, 2]")) << m;
  fs::remove_all(dir);
}

// ---- images and JSON ---------------------------------------------------------------------

TEST(Images, BmpIsReadLikeTheOtherFormats) {
  auto dir = test::temp_dir("bmp");
  cv::Mat m(5, 7, CV_8UC3, cv::Scalar(30, 60, 90));
  ASSERT_TRUE(cv::imwrite((dir / "x.bmp").string(), m));
  const std::string bytes = read_file((dir / "x.bmp").string());
  auto header = data::probe_image(bytes);  // before: none, so every .bmp was skipped as not_an_image
  ASSERT_TRUE(header.has_value());
  EXPECT_EQ(header->format, "bmp");
  EXPECT_EQ(header->width, 7);
  EXPECT_EQ(header->height, 5);
  auto decoded = data::decode_image(bytes);
  EXPECT_EQ(decoded.cols, 7);
  EXPECT_EQ(decoded.at<cv::Vec3b>(2, 3), cv::Vec3b(30, 60, 90));
  fs::remove_all(dir);
}

TEST(Json, InvalidUtf8IsReplacedAndNonFiniteNumbersAreNull) {
  // Before: bytes copied verbatim, so a Latin-1 file name made the whole --json output invalid.
  EXPECT_EQ(json_quote("caf\xe9 \xff"), "\"caf\xEF\xBF\xBD \xEF\xBF\xBD\"");
  EXPECT_EQ(json_quote("caf\xC3\xA9 \xF0\x9F\x99\x82"), "\"caf\xC3\xA9 \xF0\x9F\x99\x82\"");  // UTF-8 kept
  EXPECT_EQ(json_quote("\xC0\xAF"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                        // overlong '/'
  EXPECT_EQ(json_quote("\xED\xA0\x80"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");        // a surrogate
  EXPECT_EQ(json_quote("\xE2\x82"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                        // truncated
  EXPECT_EQ(json_float(std::nan("")), "null");  // before: "-nan"
  EXPECT_EQ(json_float(INFINITY), "null");
  EXPECT_EQ(json_float(0.25), "0.250000");
}

// ---- safetensors and indexes -------------------------------------------------------------

std::string with_header(const std::string& header, const std::string& data) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

TEST(Safetensors, HostileHeadersNameTheFileNotAStdlibFunction) {
  auto error = [](const std::string& header, const std::string& data) {
    try {
      parse_safetensors(with_header(header, data), "w.safetensors");
    } catch (const SafetensorsError& e) {
      return std::string(e.what());
    }  // anything else (std::invalid_argument "stoul", c10::Error "SymInt") escapes and fails the test
    return std::string("<accepted>");
  };
  auto m = error("{\"\\uZZZZ\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "");
  EXPECT_TRUE(contains(m, "w.safetensors") && contains(m, "four hex digits")) << m;
  m = error("{\"x\":{\"dtype\":\"U8\",\"shape\":[9999999999999999999,0],\"data_offsets\":[0,0]}}", "");
  EXPECT_TRUE(contains(m, "tensor 'x'") && contains(m, "int64")) << m;
  // Zero elements, but strides past int64 (found by fuzz_safetensors): before, c10::Error from at::empty.
  m = error("{\"x\":{\"dtype\":\"U8\",\"shape\":[0,4611686018427387904,4611686018427387904],\"data_offsets\":[0,0]}}", "");
  EXPECT_TRUE(contains(m, "tensor 'x' shape overflows")) << m;
  m = error("{\"\\ud83d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "");
  EXPECT_TRUE(contains(m, "surrogate")) << m;
  auto f = parse_safetensors(with_header("{\"\\ud83d\\ude42\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x"),
                             "w.safetensors");
  EXPECT_EQ(f.tensors.count("\xF0\x9F\x99\x82"), 1u);  // a surrogate pair is one code point
}

TEST(Safetensors, AMappingKnowsWhenItsFileWasTruncatedOrRewrittenInPlace) {
  auto dir = test::temp_dir("mapping");
  const std::string p = (dir / "i.safetensors").string();
  save_safetensors(p, {{"e", at::arange(1024, at::kFloat)}});
  {
    auto f = map_safetensors(p);
    f.mapping->check_intact();
    save_safetensors(p, {{"e", at::zeros({1024}, at::kFloat)}});  // replaced by rename: this mapping keeps the old file
    f.mapping->check_intact();
    EXPECT_EQ(f.tensors.at("e")[1000].item<float>(), 1000.0f);
  }
  {
    auto f = map_safetensors(p);
    fs::resize_file(p, 100);  // before: the next read of the mapping raised SIGBUS
    auto m = test::error_of<SafetensorsError>([&] { f.mapping->check_intact(); });
    EXPECT_TRUE(contains(m, "truncated while in use")) << m;
  }
  save_safetensors(p, {{"e", at::arange(1024, at::kFloat)}});
  {
    auto f = map_safetensors(p);
    const std::string bytes = read_file(p);
    const auto opened = fs::last_write_time(p);
    std::ofstream(p, std::ios::binary | std::ios::in | std::ios::out) << bytes;  // same inode, same size
    fs::last_write_time(p, opened + std::chrono::seconds(2));  // as a later write shows on any file system
    auto m = test::error_of<SafetensorsError>([&] { f.mapping->check_intact(); });
    EXPECT_TRUE(contains(m, "rewritten in place")) << m;
  }
  fs::remove_all(dir);
}

TEST(Safetensors, AnIndexTruncatedUnderTheScanIsAnErrorNamingItNotSigbus) {
  auto dir = test::temp_dir("truncated_scan");
  at::manual_seed(0);
  ImageIndex x;
  const int64_t N = 40000, E = 64;  // 5 MB of fp16 rows: most pages lie past the cut
  auto rows = at::randn({N, E});
  x.embeddings = (rows / rows.norm(2, 1, true)).to(at::kHalf);
  x.int8 = quantize_rows(x.embeddings);
  for (int64_t i = 0; i < N; ++i) x.paths.push_back("img" + std::to_string(i));
  x.stats = at::full({N, 2}, -1, at::kLong);
  const auto q = at::randn({kBlockedQueries, E});
  for (const bool int8 : {false, true})
    for (const int64_t Q : {int64_t{1}, kBlockedQueries}) {  // the streaming scan and the blocked kernel
      const std::string p = (dir / "x.idx").string();
      x.save(p);
      auto index = ImageIndex::open(p);
      EXPECT_EQ(index.search(q.slice(0, 0, Q), 5, 100, !int8).size(), static_cast<size_t>(Q));
      fs::resize_file(p, 8192);  // another process cuts the file: before, the scan died of SIGBUS
      auto m = test::error_of<SafetensorsError>([&] { index.search(q.slice(0, 0, Q), 5, 100, !int8); });
      EXPECT_TRUE(contains(m, "x.idx: the file was truncated while in use")) << m;
    }
  // A bus error outside the guarded reads still ends the process by SIGBUS (the guard chains to
  // the default, never to itself), after every guarded path has run.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        x.save((dir / "y.idx").string());
        auto index = ImageIndex::open((dir / "y.idx").string());
        for (const bool int8 : {false, true})
          for (const int64_t Q : {int64_t{1}, kBlockedQueries}) index.search(q.slice(0, 0, Q), 5, 100, !int8);
        std::raise(SIGBUS);
      },
      ::testing::KilledBySignal(SIGBUS), "");
  fs::remove_all(dir);
}

// ---- models ------------------------------------------------------------------------------

ModelConfig tiny(const std::string& extra = "") {
  return parse_model_config(YAML::Load("embed_dim: 8\nvision_cfg: {image_size: 16, patch_size: 8, layers: 1, width: 16, "
                                       "head_width: 8}\ntext_cfg: {context_length: 8, width: 16, heads: 2, layers: 1}\n" +
                                       extra),
                            "tiny");
}

TEST(ModelDir, MistypedOrNonFiniteWeightsAreRefusedByName) {
  CLIP model(tiny());
  auto weights = state_dict(*model);
  auto bad = weights;
  bad["logit_scale"] = at::ones_like(weights["logit_scale"]).to(at::kInt);  // a header saying I32 over a float
  auto m = test::error_of<std::runtime_error>([&] { load_state_dict(model, bad, "w.safetensors"); });
  EXPECT_TRUE(contains(m, "wrong dtype logit_scale (file Int, model Float)")) << m;
  bad = weights;
  bad["text_projection"] = weights["text_projection"].clone();
  bad["text_projection"][0][0] = std::nan("");
  m = test::error_of<std::runtime_error>([&] { load_state_dict(model, bad, "w.safetensors"); });
  EXPECT_TRUE(contains(m, "non-finite values in text_projection")) << m;
  load_state_dict(model, weights, "w.safetensors");  // the good ones still load
}

TEST(ModelDir, TheFingerprintCoversTheConfigAndAFolderWithoutOneIsNamed) {
  auto dir = test::temp_dir("fingerprint");
  CLIP model(tiny());
  save_model_dir(dir.string(), model, "clip-bpe");
  const std::string first = load_model_dir(dir.string()).fingerprint;
  // The same weights under another activation give other embeddings: before, the same fingerprint.
  write_file_atomic((dir / "config.yaml").string(), to_yaml(tiny("quick_gelu: true")));
  const LoadedModel other = load_model_dir(dir.string());
  EXPECT_TRUE(other.config.quick_gelu());
  EXPECT_NE(other.fingerprint, first);
  auto weights_part = [](const std::string& f) { return f.substr(0, f.find(':', f.find(':', 6) + 1)); };
  EXPECT_EQ(weights_part(other.fingerprint), weights_part(first));  // "crc32:W:BYTES", the weights, is the same
  fs::remove(dir / "config.yaml");
  auto m = test::error_of<std::runtime_error>([&] { load_model_dir(dir.string()); });
  // Before: "model config '.../config.yaml' is neither a file nor a known name".
  EXPECT_TRUE(contains(m, "not a model folder: config.yaml does not exist")) << m;
  fs::remove_all(dir);
}

// ---- configs -----------------------------------------------------------------------------

std::string config_error(const std::string& yaml) {
  auto dir = test::temp_dir("cfg");
  std::ofstream(dir / "m.yaml") << "embed_dim: 8\nvision_cfg: {image_size: 16, patch_size: 8, layers: 1, width: 16, head_width: 8}\n"
                                   "text_cfg: {context_length: 8, width: 16, heads: 2, layers: 1}\n";
  std::ofstream(dir / "t.yaml") << "model: " << (dir / "m.yaml").string() << "\n"
                                << (contains(yaml, "data:") ? "" : "data: {train: synthetic:8}\n") << yaml;
  auto m = test::error_of<ConfigError>([&] { load_train_config((dir / "t.yaml").string()); });
  fs::remove_all(dir);
  return m;
}

TEST(Config, EveryNumericKeyHasAFiniteBoundedRange) {
  // Each of these passed validation before (or allocated until the machine gave up); the lower
  // ends (negative counts, min_lr: -1, max_consecutive_failures: 0) were checked already.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"optim: {lr: .inf}\n", "optim.lr"},
      {"optim: {lr: 11}\n", "optim.lr"},
      {"optim: {weight_decay: .inf}\n", "optim.weight_decay"},
      {"schedule: {warmup_steps: 10000000000000}\n", "schedule.warmup_steps"},
      {"train: {grad_clip: .inf}\n", "train.grad_clip"},
      {"loss: {name: triplet, margin: .inf}\n", "loss.margin"},
      {"loss: {name: infonce, temperature: .inf}\n", "loss.temperature"},
      {"train: {threads: 100000}\n", "train.threads"},
      {"train: {accum_steps: 1000000}\n", "train.accum_steps"},
      {"data: {train: synthetic:8, batch_size: 1000000000000}\n", "data.batch_size"},
      {"data: {train: synthetic:8, workers: 1000}\n", "data.workers"},
      {"data: {train: synthetic:8, shuffle_buffer: 1000000000000}\n", "data.shuffle_buffer"},
      {"dist: {timeout_seconds: .inf}\n", "dist.timeout_seconds"},
      {"dist: {bucket_mb: 1000000000}\n", "dist.bucket_mb"},
  };
  for (const auto& [yaml, key] : cases) {
    const std::string m = config_error(yaml);
    EXPECT_TRUE(contains(m, key)) << yaml << " -> " << m;
  }
  auto dir = test::temp_dir("modelcfg");
  std::ofstream(dir / "huge.yaml") << "embed_dim: 8\nvision_cfg: {image_size: 16, patch_size: 8, layers: 1, width: 100000000, "
                                      "head_width: 8}\ntext_cfg: {context_length: 8, width: 16, heads: 2, layers: 1}\n";
  auto m = test::error_of<ConfigError>([&] { load_model_config((dir / "huge.yaml").string()); });
  EXPECT_TRUE(contains(m, "vision_cfg.width: must be an integer in [1, 65536]")) << m;
  fs::remove_all(dir);
}

TEST(Config, AFileGivenAsAConfigIsQuotedOneLineAtMost) {
  auto dir = test::temp_dir("echo");
  std::ofstream(dir / "secret") << "root:x:0:0:root:/root:/bin/bash\nsecond:line:never:to:be:printed\n";
  auto m = test::error_of<ConfigError>([&] { load_model_config((dir / "secret").string()); });
  EXPECT_TRUE(contains(m, "expected a mapping")) << m;
  EXPECT_FALSE(contains(m, "second:line")) << m;  // before: the whole file in the message
  fs::remove_all(dir);
}

TEST(Config, ANameTooLongForTheFileSystemIsUnknownNotAnOsError) {
  // Found by fuzz_config: std::filesystem::exists threw filesystem_error (ENAMETOOLONG).
  auto m = test::error_of<ConfigError>([] { load_model_config(std::string(5000, 'a')); });
  EXPECT_TRUE(contains(m, "is neither a file nor a known name")) << m.substr(0, 200);
  auto dir = test::temp_dir("folder_config");
  m = test::error_of<ConfigError>([&] { load_model_config(dir.string()); });  // found by fuzz_config too
  EXPECT_TRUE(contains(m, "is a folder, not a YAML file")) << m;
  fs::remove_all(dir);
}

TEST(Sources, HugeSyntheticCountsAndBraceRangesAreRefusedBeforeAllocating) {
  auto m = test::error_of<std::invalid_argument>([] { data::open_source("synthetic:100000000000"); });
  EXPECT_TRUE(contains(m, "COUNT must be in [1, 100000000]")) << m;
  m = test::error_of<std::invalid_argument>([] { data::expand_shards("s-{0..999999999999}.tar"); });
  EXPECT_TRUE(contains(m, "names more than")) << m;
}

// ---- metrics -----------------------------------------------------------------------------

TEST(MetricsLog, AResumedRunKeepsLinesUpToItsCheckpointAndDropsAPartialOne) {
  auto dir = test::temp_dir("metrics");
  const std::string p = (dir / "metrics.jsonl").string();
  std::ofstream(p) << "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"loss\": 2}\n{\"step\": 3, \"loss\": 1}\n{\"step\": 4, \"lo";
  {
    MetricsLog log(p, 2);  // resumed from step 2: step 3 will be redone, step 4 was cut by a crash
    log.write("{\"step\": 3, \"loss\": 1.5}");
    // Flushed per line: a kill -9 now loses nothing written.
    EXPECT_EQ(read_file(p), "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"loss\": 2}\n{\"step\": 3, \"loss\": 1.5}\n");
  }
  MetricsLog fresh(p, -1);
  EXPECT_EQ(read_file(p), "");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace torchclip
