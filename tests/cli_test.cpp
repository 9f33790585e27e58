// The real `torchclip` binary on tiny inputs: outputs, exit codes and error messages.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

#include "support.h"

namespace {

using Run = torchclip::test::CliRun;
Run run(const std::string& args) { return torchclip::test::run_cli(args); }

TEST(Cli, BenchModelJsonReportsThroughputFlopsAndUtilisation) {
  auto r = run("bench model --config tiny --batch 4 --iters 2 --warmup 1 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = YAML::Load(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j["batch"].as<int>(), 4);
  EXPECT_GT(j["samples_per_second"].as<double>(), 0);
  // Image FLOPs as the golden test checks them, plus the text tower up to the longest caption
  // (8 to 24 tokens, so at most 25 positions of the 32-token context).
  const int64_t fwd = j["forward_flops_per_sample"].as<int64_t>();
  EXPECT_GT(fwd, 12077184 + 10231808 / 4);
  EXPECT_LT(fwd, 12077184 + 10231808);
  EXPECT_EQ(j["train_flops_per_sample"].as<int64_t>(), 3 * fwd);
  EXPECT_GT(j["matmul_gflops"].as<double>(), 0);
  EXPECT_GT(j["utilisation"].as<double>(), 0);
  EXPECT_NEAR(j["loss"].as<double>(), std::log(4.0), 1.0);  // random init: near ln(batch)
}

TEST(Cli, BenchTrainAlternatesRoundsAndReportsTheMedianRatio) {
  // open_clip's step on the same model, three times alternating with ours (python3 with
  // open_clip is installed by scripts/setup.sh).
  auto r = run("bench train --config tiny --batch 4 --iters 2 --warmup 1 --rounds 3 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = YAML::Load(r.out.substr(r.out.find('{')));
  ASSERT_EQ(j["rounds"].as<int>(), 3) << r.out;
  const auto ours = j["torchclip_rounds"].as<std::vector<double>>();
  const auto theirs = j["openclip_rounds"].as<std::vector<double>>();
  ASSERT_EQ(ours.size(), 3u);
  ASSERT_EQ(theirs.size(), 3u);
  std::vector<double> ratios;
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(theirs[i], 0);
    ratios.push_back(ours[i] / theirs[i]);
  }
  std::sort(ratios.begin(), ratios.end());
  EXPECT_NEAR(j["ratio"].as<double>(), ratios[1], 1e-3 * ratios[1]);
  std::vector<double> sorted = ours;
  std::sort(sorted.begin(), sorted.end());
  // The reported step is the median round's.
  EXPECT_NEAR(j["torchclip"]["samples_per_second"].as<double>(), sorted[1], 1e-3 * sorted[1]);
  // The caching CPU allocator is on and served the timed steps' large blocks.
  EXPECT_TRUE(j["torchclip"]["cpu_cache"].as<bool>());
  const auto allocations = j["torchclip"]["cpu_cache_allocations"].as<int64_t>();
  EXPECT_GT(allocations, 0);
  EXPECT_GT(j["torchclip"]["cpu_cache_hits"].as<int64_t>(), 0);
  EXPECT_LE(j["torchclip"]["cpu_cache_hits"].as<int64_t>(), allocations);
}

TEST(Cli, CpuCacheCanBeTurnedOffAndABadSettingIsNamed) {
  auto r = torchclip::test::run_shell("TORCHCLIP_CPU_CACHE=0 " + std::string(TORCHCLIP_BINARY) +
                                      " bench model --config tiny --batch 2 --iters 1 --warmup 0 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = YAML::Load(r.out.substr(r.out.find('{')));
  EXPECT_FALSE(j["cpu_cache"].as<bool>());
  EXPECT_EQ(j["cpu_cache_allocations"].as<int64_t>(), 0);
  r = torchclip::test::run_shell("TORCHCLIP_CPU_CACHE_MB=lots " + std::string(TORCHCLIP_BINARY) + " model info --config tiny");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("TORCHCLIP_CPU_CACHE_MB='lots': expected a positive whole number of megabytes"), std::string::npos)
      << r.out;
}

TEST(Cli, BenchModelBf16Runs) {
  auto r = run("bench model --config tiny --batch 2 --iters 1 --warmup 0 --precision bf16 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"precision\": \"bf16\""), std::string::npos);
}

TEST(Cli, ModelInfoPrintsCountsAndStateDict) {
  auto r = run("model info --config ViT-B-32 --state-dict");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("parameters: 151277313"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("visual.conv1.weight 768x3x32x32"), std::string::npos);
}

TEST(Cli, CountFlagsOutsideTheirRangeAreUsageErrorsBeforeAnyWork) {
  // embed --batch 0 used to loop forever; a repeated single-valued flag took its first value.
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"embed --model nowhere --texts - --out x.npy --batch 0", "--batch 0 is outside [1, 65536]"},
           {"train --config nowhere.yaml --nproc 1000", "--nproc 1000 is outside [1, 256]"},
           {"zeroshot --model nowhere --classes a,b --images x.png --max-rows -1", "--max-rows -1 is outside"},
           {"search --index nowhere --model nowhere --query a --k 0", "--k 0 is outside"},
           {"bench data --images 10 --workers 2 --workers 3", "--workers is given 2 times"}}) {
    auto r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << args << "\n" << r.out;
  }
}

TEST(Cli, BadConfigIsAClearErrorWithExitCode3) {
  auto r = run("model info --config no-such-model");
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.out.find("known names:"), std::string::npos) << r.out;
}

TEST(Cli, TokenizerEncodeMatchesOpenClipIds) {
  auto r = run("tokenizer encode --text 'a photo of a cat.' --context-length 8");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "49406 320 1125 539 320 2368 269 49407\n");
}

TEST(Cli, TokenizerTrainWritesAModelThatEncodes) {
  const std::string dir = "/tmp/torchclip_cli_spm_" + std::to_string(getpid());
  std::string corpus = dir + ".txt";
  FILE* f = fopen(corpus.c_str(), "w");
  for (int i = 0; i < 300; ++i) fprintf(f, "a photo of a %s number %d\n", i % 2 ? "shirt" : "sandal", i);
  fclose(f);
  auto r = run("tokenizer train --input " + corpus + " --out " + dir + " --vocab-size 60");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pool_type: eos, eos_id: 3"), std::string::npos) << r.out;
  r = run("tokenizer encode --tokenizer " + dir + "/tokenizer.model --text 'a photo of a shirt' --context-length 12");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("2 ", 0), 0u) << r.out;  // starts with the start id
  r = run("tokenizer train --input /no/such/file --out " + dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/no/such/file"), std::string::npos) << r.out;
  std::remove(corpus.c_str());
  std::system(("rm -rf " + dir).c_str());
}

/// Writes an IDX file of unsigned bytes (magic 0x0000080N, big-endian dims).
void write_idx(const std::string& path, const std::vector<int>& dims, const std::vector<unsigned char>& data) {
  FILE* f = fopen(path.c_str(), "wb");
  unsigned char magic[4] = {0, 0, 8, static_cast<unsigned char>(dims.size())};
  fwrite(magic, 1, 4, f);
  for (int d : dims) {
    unsigned char be[4] = {static_cast<unsigned char>(d >> 24), static_cast<unsigned char>(d >> 16),
                           static_cast<unsigned char>(d >> 8), static_cast<unsigned char>(d)};
    fwrite(be, 1, 4, f);
  }
  fwrite(data.data(), 1, data.size(), f);
  fclose(f);
}

TEST(Cli, PrepareFashionMnistThenDataCheck) {
  const std::string dir = "/tmp/torchclip_cli_fm_" + std::to_string(getpid());
  std::system(("mkdir -p " + dir + "/idx").c_str());
  for (const std::string split : {"train", "t10k"}) {
    const int n = split == "train" ? 20 : 10;
    std::vector<unsigned char> pixels(n * 28 * 28), labels(n);
    for (int i = 0; i < n; ++i) {
      labels[i] = static_cast<unsigned char>(i % 10);
      for (int p = 0; p < 28 * 28; ++p) pixels[i * 784 + p] = static_cast<unsigned char>((p * (i + 1)) % 251);
    }
    write_idx(dir + "/idx/" + split + "-images-idx3-ubyte.gz", {n, 28, 28}, pixels);  // gzopen reads plain files
    write_idx(dir + "/idx/" + split + "-labels-idx1-ubyte.gz", {n}, labels);
  }
  auto r = run("prepare fashion-mnist --source " + dir + "/idx --out " + dir + "/fm --format wds");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("20 training and 10 test images"), std::string::npos) << r.out;
  r = run("data check --data " + dir + "/fm/test.csv --csv-label-key label --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = YAML::Load(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j["good"].as<int>(), 10);
  EXPECT_EQ(j["skipped"].as<int>(), 0);
  EXPECT_EQ(j["image_width"]["p50"].as<int>(), 28);
  r = run("data check --data " + dir + "/fm/shards/train-000000.tar --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(YAML::Load(r.out.substr(r.out.find('{')))["good"].as<int>(), 20);
  // Bad input: a broken image and a short row are skipped and counted by reason, with examples.
  FILE* f = fopen((dir + "/fm/bad.csv").c_str(), "w");
  fprintf(f, "filepath,title\nimages/test/00000.png,ok\nimages/test/00001.png\nnot-there.png,gone\n");
  fclose(f);
  r = run("data check --data " + dir + "/fm/bad.csv --json");
  ASSERT_EQ(r.code, 0) << r.out;
  j = YAML::Load(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j["good"].as<int>(), 1);
  EXPECT_EQ(j["skipped"].as<int>(), 2);
  EXPECT_EQ(j["skipped_by_reason"]["csv_too_few_columns"].as<int>(), 1);
  EXPECT_EQ(j["skipped_by_reason"]["image_missing"].as<int>(), 1);
  EXPECT_NE(j["examples"]["csv_too_few_columns"][0].as<std::string>().find("bad.csv:3"), std::string::npos);
  r = run("data check --data " + dir + "/fm/nothing.csv");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("nothing.csv"), std::string::npos) << r.out;
  std::system(("rm -rf " + dir).c_str());
}

TEST(Cli, BenchDataRunsWithoutThePeer) {
  auto r = run("bench data --images 40 --batch 8 --no-compare --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = YAML::Load(r.out.substr(r.out.rfind("{\"images\"")));
  EXPECT_EQ(j["images"].as<int>(), 40);
  EXPECT_GT(j["torchclip_images_per_second"].as<double>(), 0);
}

TEST(Cli, UnknownFlagAndCommandAreUsageErrors) {
  auto r = run("bench model --config tiny --batchsize 3");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("unknown flag --batchsize"), std::string::npos) << r.out;
  EXPECT_NE(run("frobnicate").out.find("unknown command"), std::string::npos);
  r = run("bench model --config tiny --precision fp8");
  EXPECT_EQ(r.code, 2);  // a flag's value: a usage error like any other (was 1)
  EXPECT_NE(r.out.find("--precision: \"fp8\" is not one of: fp32, bf16"), std::string::npos) << r.out;
}

TEST(Cli, HelpWorksOnEverySubcommand) {
  // Before: some said "--config is required" or "unknown flag --help".
  for (const char* cmd : {"train", "eval", "zeroshot", "embed", "index", "search", "convert", "export", "prepare", "data",
                          "bench", "model", "tokenizer"}) {
    for (const char* flag : {"--help", "-h"}) {
      auto r = run(std::string(cmd) + " " + flag);
      EXPECT_EQ(r.code, 0) << cmd << " " << flag << ": " << r.out;
      EXPECT_NE(r.out.find(std::string("usage: torchclip ") + cmd), std::string::npos) << r.out;
      EXPECT_NE(r.out.find(std::string("\n  ") + cmd), std::string::npos) << cmd << ": no usage block\n" << r.out;
    }
  }
  EXPECT_NE(run("data pack --help").out.find("\n  data pack"), std::string::npos);
}

TEST(Cli, UsageErrorsExit2AndOutputPathsAreCheckedBeforeAnyWork) {
  const auto dir = torchclip::test::temp_dir("usage");
  const std::string missing_model = " --model " + (dir / "no-model").string();
  struct Case {
    std::string args, says;
  };
  const std::vector<Case> cases = {
      {"search --index x.idx" + missing_model + " --query q --k 0", "--k 0 is outside"},
      {"index" + missing_model + " --images . --out x.idx --workers 0", "--workers 0 is outside"},
      {"eval" + missing_model + " --data synthetic:4 --resize nope", "--resize"},  // was exit 1
      {"eval" + missing_model + " --data synthetic:4 --device tpu", "is not a device"},
      {"embed" + missing_model + " --texts - --out /no/such/folder/e.npy", "the folder /no/such/folder does not exist"},
      {"index" + missing_model + " --images . --out " + dir.string(), "names a folder"},
      {"zeroshot" + missing_model + " --classes a,b --images . --save-classifier /no/such/c.safetensors", "does not exist"},
      {"train --config tiny --out ''", "--out: the run folder is empty"},
      {"export" + missing_model + " --out " + dir.string() + "/", "not a folder"},
      {"convert --openclip-config ViT-B-32 --weights " + dir.string() + " --out m", "is a folder, not a file"},
      {"convert --openclip-config ViT-B-32 --weights w.safetensors --out m --image-size 0", "--image-size 0 is outside"},
      {"data check --data synthetic:100000000000", "COUNT must be in"},
      {"data check --data 's-{0..999999999999}.tar'", "names more than"},
      // at::topk's "selected index k out of range" leaked through here
      {"bench search --rows 5 --k 10 --no-compare", "--k 10 is more than the index's --rows 5"},
      {"bench search --rows 10000000000 --no-compare", "more than this machine's memory"},
      {"bench search --rows 5 --k 1 --dtype fp8 --no-compare", "valid: fp16, fp32"},
  };
  for (const auto& c : cases) {
    // Each fails at once: the model folder does not even exist, so no work was started.
    auto r = run(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.says), std::string::npos) << c.args << "\n" << r.out;
  }
  std::filesystem::remove_all(dir);
}

TEST(Cli, AnUnresolvableMasterAddrIsOneLineNamingIt) {
  const auto dir = torchclip::test::temp_dir("master_addr");
  std::ofstream(dir / "t.yaml") << "model: tiny\ndata: {train: synthetic:8, batch_size: 4, workers: 1}\n"
                                   "train: {steps: 1, threads: 1}\ndist: {timeout_seconds: 20}\n";
  // A name in the .invalid domain never resolves (RFC 6761); the final dot keeps resolv.conf's
  // search domains out of it.
  auto r = torchclip::test::run_shell("MASTER_ADDR=no-such-host.invalid. MASTER_PORT=29555 WORLD_SIZE=2 RANK=1 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 timeout 60 " +
                                      std::string(TORCHCLIP_BINARY) + " train --config " + (dir / "t.yaml").string() +
                                      " --out " + (dir / "run").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("MASTER_ADDR='no-such-host.invalid.' does not resolve"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("frame #"), std::string::npos) << r.out;  // before: a 42-frame C++ stack trace
  std::filesystem::remove_all(dir);
}

}  // namespace
