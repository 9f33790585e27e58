// The retrieval and classification tools on a small model trained here: four colour classes of
// noisy squares, captioned "a photo of a red square" and so on, trained for a few seconds.
// zeroshot must beat chance widely, search must find the named colour, an updated index must
// equal one built from scratch, and the HTML gallery must load every image in real Chromium.
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/model_dir.h"
#include "search/scan.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <regex>

#include "colour_model.h"
#include "support.h"

namespace torchclip {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

using test::kColours;

double number_after(const std::string& s, const std::string& key) {
  const size_t p = s.find("\"" + key + "\": ");
  return p == std::string::npos ? -1 : std::stod(s.substr(p + key.size() + 4));
}

class ToolsFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(test::temp_dir("tools"));
    std::string log;
    const std::string model = test::train_colour_model(*dir_, log);
    ASSERT_FALSE(model.empty()) << log;
    model_ = new std::string(model);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete model_;
  }
  static std::string m() { return " --model " + *model_; }
  static fs::path* dir_;
  static std::string* model_;
};
fs::path* ToolsFixture::dir_ = nullptr;
std::string* ToolsFixture::model_ = nullptr;

TEST_F(ToolsFixture, ZeroShotOnAnImageFolderBeatsChanceAndWritesTheConfusionMatrix) {
  const fs::path& d = *dir_;
  auto r = run_cli("zeroshot" + m() + " --data " + (d / "imgs").string() + " --templates " + (d / "templates.txt").string() +
                   " --json --confusion " + (d / "conf").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const double top1 = number_after(r.out, "top1");
  std::cout << "[ tools ] zero-shot top-1 on 96 images of 4 colours: " << top1 << " (chance 0.25)\n";
  EXPECT_GE(top1, 0.75) << r.out.substr(0, 2000);
  EXPECT_DOUBLE_EQ(number_after(r.out, "top5"), 1.0);  // 4 classes: always within the top 5
  EXPECT_NE(r.out.find("\"per_class\": {\"blue\": "), std::string::npos);
  EXPECT_TRUE(fs::file_size(d / "conf.png") > 1000);
  std::ifstream conf(d / "conf.csv");
  std::string header;
  std::getline(conf, header);
  EXPECT_EQ(header, "true/predicted,blue,green,red,yellow");  // ImageFolder classes: sorted folder names
  // A saved classifier gives the same answers; CSV output has one row per image.
  r = run_cli("zeroshot" + m() + " --classes red,green,blue,yellow --templates " + (d / "templates.txt").string() +
              " --save-classifier " + (d / "clf.safetensors").string());
  ASSERT_EQ(r.code, 0) << r.out;
  auto a = run_cli("zeroshot" + m() + " --classes red,green,blue,yellow --templates " + (d / "templates.txt").string() +
                   " --images " + (d / "imgs").string() + " --csv --top-k 2");
  auto b = run_cli("zeroshot" + m() + " --classifier " + (d / "clf.safetensors").string() + " --images " + (d / "imgs").string() +
                   " --csv --top-k 2");
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(std::count(a.out.begin(), a.out.end(), '\n'), 97);
  EXPECT_EQ(a.out.substr(0, a.out.find('\n')), "path,label,class_1,prob_1,class_2,prob_2");
  // Default templates (OpenAI's 80) and an unknown folder name.
  r = run_cli("zeroshot" + m() + " --classes red,green --data " + (d / "imgs").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("folder matches no class name"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("red, green"), std::string::npos) << r.out;
}

TEST_F(ToolsFixture, SearchFindsTheNamedColourAndTheGalleryLoadsInChromium) {
  const fs::path& d = *dir_;
  const std::string idx = (d / "all.idx").string();
  auto r = run_cli("index" + m() + " --images " + (d / "imgs").string() + " --out " + idx);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* colour : kColours) {
    r = run_cli("search --index " + idx + m() + " --query 'a photo of a " + colour + " square' --k 10 --json");
    ASSERT_EQ(r.code, 0) << r.out;
    int hits = 0;
    for (size_t p = r.out.find(std::string("/") + colour + "/"); p != std::string::npos;
         p = r.out.find(std::string("/") + colour + "/", p + 1))
      ++hits;
    std::cout << "[ tools ] search '" << colour << "': " << hits << " of the top 10 are " << colour << "\n";
    EXPECT_GE(hits, 8) << r.out;
  }
  // Queries from stdin, an image query (its own file comes first), contact sheet and gallery.
  std::ofstream(d / "queries.txt") << "a photo of a red square\na photo of a blue square\n";
  r = run_cli("search --index " + idx + m() + " --k 3 --json < " + (d / "queries.txt").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"query\": \"a photo of a blue square\""), std::string::npos) << r.out;
  const std::string probe = (d / "imgs" / "green" / "3.png").string();
  r = run_cli("search --index " + idx + m() + " --image " + probe + " --k 1 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"rank\": 1, \"score\": 1.0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(probe), std::string::npos) << r.out;
  const std::string html = (d / "gallery.html").string(), png = (d / "grid.png").string();
  r = run_cli("search --index " + idx + m() + " --query 'a photo of a yellow square' --k 10 --gallery " + html + " --grid " + png);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(fs::file_size(png), 1000u);
  auto dom = test::run_shell("chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=5000 --dump-dom file://" + html);
  ASSERT_EQ(dom.code, 0) << "headless Chromium failed (installed by scripts/setup.sh):\n" << dom.out;
  std::smatch loaded;
  ASSERT_TRUE(std::regex_search(dom.out, loaded, std::regex("data-loaded=\"([0-9]+)/([0-9]+)\""))) << dom.out.substr(0, 3000);
  std::cout << "[ tools ] Chromium loaded " << loaded[1] << " of " << loaded[2] << " gallery images\n";
  EXPECT_EQ(loaded[1], "10");
  EXPECT_EQ(loaded[2], "10");
}

TEST_F(ToolsFixture, AnUpdatedIndexEqualsOneBuiltFromScratch) {
  const fs::path& d = *dir_;
  const fs::path lib = d / "library";
  fs::create_directories(lib);
  for (int i = 0; i < 10; ++i) fs::copy_file(d / "imgs" / "red" / (std::to_string(i) + ".png"), lib / ("r" + std::to_string(i) + ".png"));
  std::ofstream(lib / "broken.jpg") << "not a jpeg";
  const std::string inc = (d / "inc.idx").string(), scratch = (d / "scratch.idx").string();
  auto r = run_cli("index" + m() + " --images " + lib.string() + " --out " + inc + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("broken.jpg"), std::string::npos) << r.out;  // bad files are listed
  EXPECT_EQ(number_after(r.out, "total"), 10);
  // Add five, remove three: only the five are embedded, the three are pruned.
  for (int i = 0; i < 5; ++i) fs::copy_file(d / "imgs" / "blue" / (std::to_string(i) + ".png"), lib / ("b" + std::to_string(i) + ".png"));
  for (int i = 0; i < 3; ++i) fs::remove(lib / ("r" + std::to_string(i) + ".png"));
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + inc + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(number_after(r.out, "embedded"), 5) << r.out;
  EXPECT_EQ(number_after(r.out, "kept"), 7) << r.out;
  EXPECT_EQ(number_after(r.out, "pruned"), 3) << r.out;
  EXPECT_EQ(number_after(r.out, "total"), 12) << r.out;
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + scratch + " --measure-model --json");
  ASSERT_EQ(r.code, 0) << r.out;
  // The build reports its wait for data and the model's own rate on a decoded batch.
  const double wait = number_after(r.out, "data_wait_seconds"), secs = number_after(r.out, "seconds");
  EXPECT_GE(wait, 0) << r.out;
  EXPECT_LE(wait, secs) << r.out;
  EXPECT_GT(number_after(r.out, "model_images_per_second"), 0) << r.out;
  auto a = load_safetensors(inc), b = load_safetensors(scratch);
  for (const char* t : {"embeddings", "paths", "path_offsets", "stats"}) EXPECT_TRUE(a.tensors[t].equal(b.tensors[t])) << t;
  EXPECT_EQ(a.metadata["model_fingerprint"], b.metadata["model_fingerprint"]);
  // Another model's index is refused by search and by index.
  auto other = load_model_dir(*model_);
  {
    torch::NoGradGuard g;
    other.model->logit_scale.add_(0.5);
  }
  const fs::path other_dir = d / "other-model";
  fs::create_directories(other_dir);
  save_model_dir(other_dir.string(), other.model, other.tokenizer_spec);
  r = run_cli("search --index " + inc + " --model " + other_dir.string() + " --query red");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("this index was built by model"), std::string::npos) << r.out;
  r = run_cli("index --model " + other_dir.string() + " --images " + lib.string() + " --out " + inc);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("built by another model"), std::string::npos) << r.out;
}

TEST_F(ToolsFixture, AnInt8IndexScansCodesAndRerankedEqualsTheExactSearch) {
  const fs::path& d = *dir_;
  const std::string i8 = (d / "int8.idx").string(), f16 = (d / "fp16.idx").string();
  auto r = run_cli("index" + m() + " --images " + (d / "imgs").string() + " --out " + i8 + " --dtype int8");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("index" + m() + " --images " + (d / "imgs").string() + " --out " + f16);
  ASSERT_EQ(r.code, 0) << r.out;
  auto a = load_safetensors(i8), b = load_safetensors(f16);
  EXPECT_TRUE(a.tensors["embeddings"].equal(b.tensors["embeddings"]));  // the fp16 rows that rerank
  ASSERT_TRUE(a.tensors.count("codes") && a.tensors.count("scales"));
  EXPECT_EQ(a.tensors["codes"].scalar_type(), at::kChar);
  EXPECT_TRUE(a.tensors["codes"].equal(quantize_rows(b.tensors["embeddings"]).codes));
  const auto results = [&](const std::string& idx, const std::string& flags) {
    auto x = run_cli("search --index " + idx + m() + " --query 'a photo of a red square' --k 10 --json" + flags);
    EXPECT_EQ(x.code, 0) << x.out;
    return std::regex_replace(x.out, std::regex("\"(index|search_ms|method)\": [^,]*, "), "");
  };
  // Reranking at least every row is the exact search: the default 100 candidates cover these 96 images.
  const std::string exact = results(f16, "");
  EXPECT_EQ(results(i8, ""), exact);
  r = run_cli("search --index " + i8 + m() + " --query red --json");
  EXPECT_NE(r.out.find("\"method\": \"int8+rerank\""), std::string::npos) << r.out;
  EXPECT_EQ(results(i8, " --exact"), exact);
  EXPECT_EQ(results(i8, " --candidates 1000"), exact);
  r = run_cli("index" + m() + " --images " + (d / "imgs").string() + " --out " + (d / "x.idx").string() + " --dtype int4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("valid: fp16, fp32, int8"), std::string::npos) << r.out;
}

TEST_F(ToolsFixture, FaissIndexesBesideTheIndexMatchTheExactScanUpdateAndRefuseStaleFiles) {
  if (!TORCHCLIP_HAVE_FAISS) GTEST_SKIP() << "built with -DTORCHCLIP_FAISS=OFF";
  const fs::path& d = *dir_;
  const fs::path lib = d / "faiss-lib";
  fs::create_directories(lib);
  for (const char* colour : {"red", "blue"})
    for (int i = 0; i < 24; ++i)
      fs::copy_file(d / "imgs" / colour / (std::to_string(i) + ".png"), lib / (std::string(colour) + std::to_string(i) + ".png"));
  const std::string idx = (d / "f.idx").string();
  auto scores_of = [](const std::string& json) {
    std::vector<double> out;
    const std::regex score("\"score\": ([-0-9.e]+)");
    for (std::sregex_iterator it(json.begin(), json.end(), score), end; it != end; ++it) out.push_back(std::stod((*it)[1]));
    return out;
  };
  // The top 5 of the exact scan of the same index: rank by rank the same score within 1e-4 (this
  // small model gives images of one colour scores that differ in the fifth decimal, so tied rows
  // may come in another order).
  auto same_as_exact = [&](const std::string& flags, const std::string& method) {
    for (const char* colour : {"red", "blue"}) {
      const std::string q = std::string(" --query 'a photo of a ") + colour + " square' --k 5 --json";
      auto a = run_cli("search --index " + idx + m() + q + flags), b = run_cli("search --index " + idx + m() + q + " --exact");
      ASSERT_EQ(a.code, 0) << a.out;
      ASSERT_EQ(b.code, 0) << b.out;
      EXPECT_NE(a.out.find("\"method\": \"" + method + "\""), std::string::npos) << a.out;
      EXPECT_NE(b.out.find("\"method\": \"exact\""), std::string::npos) << b.out;
      const auto x = scores_of(a.out), y = scores_of(b.out);
      ASSERT_EQ(x.size(), 5u) << a.out;
      ASSERT_EQ(y.size(), 5u) << b.out;
      for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(x[i], y[i], 1e-4) << i << "\n" << a.out << b.out;
    }
  };
  auto r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --type ivf-flat --nlist 4 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"ann\": {\"type\": \"ivf-flat\", \"retrained\": true"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(idx + ".faiss"));
  same_as_exact(" --nprobe 4", "faiss:ivf-flat");
  // An update embeds the new files and refills the trained index, keeping its type.
  for (int i = 0; i < 5; ++i) fs::copy_file(d / "imgs" / "yellow" / (std::to_string(i) + ".png"), lib / ("yellow" + std::to_string(i) + ".png"));
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(number_after(r.out, "embedded"), 5) << r.out;
  EXPECT_NE(r.out.find("\"ann\": {\"type\": \"ivf-flat\", \"retrained\": false"), std::string::npos) << r.out;
  same_as_exact(" --nprobe 4", "faiss:ivf-flat");
  // A FAISS file from another build of the index is refused, naming both.
  fs::copy_file(idx + ".faiss", d / "old.faiss");
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --retrain");
  ASSERT_EQ(r.code, 0) << r.out;
  fs::copy_file(d / "old.faiss", idx + ".faiss", fs::copy_options::overwrite_existing);
  r = run_cli("search --index " + idx + m() + " --query red");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("f.idx.faiss: this FAISS index (53 rows, build"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rebuild it with torchclip index --type ivf-flat"), std::string::npos) << r.out;
  // An update over a stale FAISS file says so and retrains. HNSW; IVF-PQ needs more rows to train
  // its codebooks than 53; exact removes the FAISS file.
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --type hnsw --hnsw-m 8 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(the FAISS index is rebuilt and retrained)"), std::string::npos) << r.out;
  same_as_exact("", "faiss:hnsw");
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --type ivf-pq --nlist 4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("ivf-pq needs at least 256 training rows (8-bit codebooks), got 53"), std::string::npos) << r.out;
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --type exact");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(idx + ".faiss"));
  r = run_cli("index" + m() + " --images " + lib.string() + " --out " + idx + " --type lsh");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("valid: auto, exact, flat, ivf-flat, ivf-pq, hnsw"), std::string::npos) << r.out;
}

TEST_F(ToolsFixture, ShardsBuiltApartAndMergedOnDiskEqualOneIndexBuiltAtOnce) {
  if (!TORCHCLIP_HAVE_FAISS) GTEST_SKIP() << "built with -DTORCHCLIP_FAISS=OFF";
  const fs::path& d = *dir_;
  auto idx = [&](const std::string& name) { return (d / (name + ".idx")).string(); };
  // Shard 0 trains the IVF index; the other shards and the whole collection reuse its training.
  auto r = run_cli("index" + m() + " --images " + (d / "imgs" / "red").string() + " --out " + idx("s0") + " --type ivf-flat --nlist 4");
  ASSERT_EQ(r.code, 0) << r.out;
  for (int c = 1; c < 4; ++c) {
    r = run_cli("index" + m() + " --images " + (d / "imgs" / kColours[c]).string() + " --out " + idx("s" + std::to_string(c)) +
                " --trained " + idx("s0"));
    ASSERT_EQ(r.code, 0) << r.out;
  }
  r = run_cli("index" + m() + " --images " + (d / "imgs").string() + " --out " + idx("whole") + " --trained " + idx("s0") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"ann\": {\"type\": \"ivf-flat\", \"retrained\": false"), std::string::npos) << r.out;
  r = run_cli("index --merge " + idx("s0") + " --merge " + idx("s1") + " --merge " + idx("s2") + " --merge " + idx("s3") + " --out " +
              idx("merged"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("96 images merged from 4 shards; FAISS ivf-flat with on-disk lists"), std::string::npos) << r.out;
  int ivfdata = 0;
  for (const auto& e : fs::directory_iterator(d)) ivfdata += e.path().filename().string().find("merged.idx.faiss.") == 0;
  EXPECT_EQ(ivfdata, 1);
  // The same rows, and the same answers with 2 of 4 lists visited (so the lists themselves must match).
  auto a = load_safetensors(idx("merged")), b = load_safetensors(idx("whole"));
  for (const char* t : {"embeddings", "paths", "path_offsets", "stats"}) EXPECT_TRUE(a.tensors[t].equal(b.tensors[t])) << t;
  const auto answer = [&](const std::string& index, const std::string& query) {
    auto x = run_cli("search --index " + index + m() + query + " --k 10 --nprobe 2 --json");
    EXPECT_EQ(x.code, 0) << x.out;
    EXPECT_NE(x.out.find("\"method\": \"faiss:ivf-flat\""), std::string::npos) << x.out;
    return std::regex_replace(x.out, std::regex("\"(index|search_ms)\": [^,]*, "), "");
  };
  for (const char* colour : kColours) {
    const std::string q = std::string(" --query 'a photo of a ") + colour + " square'";
    EXPECT_EQ(answer(idx("merged"), q), answer(idx("whole"), q)) << colour;
  }
  const std::string image = " --image " + (d / "imgs" / "green" / "5.png").string();
  EXPECT_EQ(answer(idx("merged"), image), answer(idx("whole"), image));
  // A shard trained apart, a file in two shards, and updating a merged index are errors naming them.
  r = run_cli("index" + m() + " --images " + (d / "imgs" / "blue").string() + " --out " + idx("apart") + " --type ivf-flat --nlist 4");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("index --merge " + idx("s0") + " --merge " + idx("apart") + " --out " + idx("bad"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("apart.idx (ivf-flat, training"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("was not trained with " + idx("s0")), std::string::npos) << r.out;
  r = run_cli("index --merge " + idx("s2") + " --merge " + idx("apart") + " --out " + idx("bad"));
  EXPECT_NE(r.out.find("/imgs/blue/0.png is in"), std::string::npos) << r.out;
  r = run_cli("index" + m() + " --images " + (d / "imgs").string() + " --out " + idx("merged"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("merged from shards"), std::string::npos) << r.out;
}

TEST_F(ToolsFixture, EmbedWritesNpyAndSafetensorsInInputOrder) {
  const fs::path& d = *dir_;
  const std::string npy = (d / "e.npy").string(), st = (d / "t.safetensors").string();
  auto r = run_cli("embed" + m() + " --images " + (d / "imgs" / "green").string() + " " + (d / "imgs" / "red" / "0.png").string() +
                   " --out " + npy);
  ASSERT_EQ(r.code, 0) << r.out;
  // numpy reads it: 25 unit rows of 16, the sidecar lists the inputs in the same order.
  r = test::run_shell("python3 -c \"import numpy as np, json; e = np.load('" + npy + "'); s = json.load(open('" + npy +
                        ".json')); print(e.shape, e.dtype, round(float(np.abs(np.linalg.norm(e, axis=1) - 1).max()), 4), "
                        "s['count'], s['inputs'][-1].endswith('red/0.png'))\"");
  EXPECT_EQ(r.out, "(25, 16) float32 0.0 25 True\n") << r.out;
  std::ofstream(d / "texts.txt") << "a photo of a red square\na photo of a blue square\n";
  r = run_cli("embed" + m() + " --texts " + (d / "texts.txt").string() + " --out " + st);
  ASSERT_EQ(r.code, 0) << r.out;
  auto t = load_safetensors(st).tensors.at("embeddings");
  EXPECT_EQ(t.sizes(), at::IntArrayRef({2, 16}));
  r = run_cli("embed" + m() + " --texts " + (d / "texts.txt").string() + " --out " + (d / "x.csv").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find(".npy or .safetensors"), std::string::npos) << r.out;
}

// ---- hardening: the tools with bad input and faults --------------------------------------

TEST_F(ToolsFixture, LabelsPastTheClassListAreAnErrorNamingTheRowNotACrash) {
  const fs::path& d = *dir_;
  std::ofstream csv(d / "labelled.csv");
  csv << "filepath,title,label\n";
  for (int c = 0; c < 4; ++c) csv << "imgs/" << kColours[c] << "/0.png,x," << c << "\n";
  csv.close();
  // Before: a segfault, a bus error or std::bad_alloc (labels 2 and 3 indexed a list of two).
  auto r = run_cli("zeroshot" + m() + " --classes red,green --templates " + (d / "templates.txt").string() + " --data " +
                   (d / "labelled.csv").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("labelled.csv:4: label 2 is outside [0, 1]"), std::string::npos) << r.out;
  r = run_cli("zeroshot" + m() + " --classes red,green,blue,yellow --templates " + (d / "templates.txt").string() +
              " --data " + (d / "labelled.csv").string() + " --json");
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(ToolsFixture, FolderRowsAndFolderFlagsAreReportedNotExpandedOrFatal) {
  const fs::path& d = *dir_;
  std::ofstream csv(d / "folders.csv");
  csv << "filepath,title\nimgs/red,a folder\n,an empty path\n";
  for (int i = 0; i < 6; ++i) csv << "imgs/red/" << i << ".png,a red square\n";
  csv.close();
  const std::string idx = (d / "folders.idx").string();
  auto r = run_cli("index" + m() + " --data " + (d / "folders.csv").string() + " --out " + idx + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  // Before: the folder row added its 24 images to the 6 rows (and again on every update).
  EXPECT_EQ(number_after(r.out, "total"), 6) << r.out;
  EXPECT_NE(r.out.find("folders.csv:2: " + (d / "imgs/red").string() + " is a folder, not a file"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("folders.csv:3: csv_empty_path"), std::string::npos) << r.out;
  r = run_cli("index" + m() + " --data " + (d / "folders.csv").string() + " --out " + idx + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(number_after(r.out, "embedded"), 0) << r.out;
  EXPECT_EQ(number_after(r.out, "pruned"), 0) << r.out;
  EXPECT_EQ(number_after(r.out, "kept"), 6) << r.out;
  // Training and evaluation skip such rows and count them; a folder as a flag is a usage error.
  r = run_cli("data check --data " + (d / "folders.csv").string() + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"image_is_folder\": 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"csv_empty_path\": 1"), std::string::npos) << r.out;
  r = run_cli("search --index " + idx + m() + " --image " + (d / "imgs").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("is a folder, not a file"), std::string::npos) << r.out;
}

TEST_F(ToolsFixture, NoUsableDataIsAnErrorAndJsonIsAlwaysValid) {
  const fs::path& d = *dir_;
  std::ofstream(d / "gone.csv") << "filepath,title,label\nmissing1.png,a,0\nmissing2.png,b,1\n";
  auto r = run_cli("eval" + m() + " --data " + (d / "gone.csv").string() + " --json");
  EXPECT_EQ(r.code, 1) << r.out;  // before: "{}" and exit 0
  EXPECT_NE(r.out.find("no usable images (2 samples skipped: 2 image_missing)"), std::string::npos) << r.out;
  // A file name that is not UTF-8 (Latin-1 "café") is escaped, so Python reads the output.
  const fs::path latin = d / "latin";
  fs::create_directories(latin);
  fs::copy_file(d / "imgs" / "red" / "1.png", latin / "caf\xe9.png");
  const std::string idx = (d / "latin.idx").string();
  ASSERT_EQ(run_cli("index" + m() + " --images " + latin.string() + " --out " + idx).code, 0);
  r = test::run_shell(std::string(TORCHCLIP_BINARY) + " search --index " + idx + m() +
                      " --query red --json 2>/dev/null | python3 -c 'import json,sys; j = json.load(sys.stdin); "
                      "print(j[\"queries\"][0][\"results\"][0][\"path\"].endswith(\"caf\\ufffd.png\"))'");
  EXPECT_EQ(r.out, "True\n") << r.out;
}

TEST_F(ToolsFixture, ARunFolderIsLockedAndInterruptedWritesAreCleanedOnResume) {
  const fs::path& d = *dir_;
  const fs::path run = d / "locked";
  const std::string train = "train --config " + (d / "train.yaml").string() + " --out " + run.string() +
                            " --set train.steps=4 --set train.checkpoint_every=2";
  fs::create_directories(run);
  // A second training into a folder in use is refused (before: both wrote it).
  auto r = test::run_shell("flock " + (run / ".lock").string() + " " + TORCHCLIP_BINARY + " " + train);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("another process is using this folder"), std::string::npos) << r.out;
  // A full disk at the first checkpoint (a file size limit: writes fail with EFBIG): a clear
  // error, and nothing half-written left to break the next --resume auto.
  r = test::run_shell("trap '' XFSZ; ulimit -f 300; " + std::string(TORCHCLIP_BINARY) + " " + train);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("File too large"), std::string::npos) << r.out;
  for (const auto& e : fs::recursive_directory_iterator(run))
    EXPECT_FALSE(is_temp_name(e.path().filename().string())) << e.path();
  // Temporaries of a crash (kill -9 mid-write) are removed by the next run, which resumes.
  fs::create_directories(run / "checkpoints" / "step-00000002.tmp");
  std::ofstream(run / "train_config.yaml.tmp.Ab12Cd") << "partial";
  r = run_cli(train + " --resume auto");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("removed 2 temporaries of interrupted writes"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step-00000004" / "MANIFEST"));
}

TEST(BenchSearch, SmallIndexIsExact) {
  auto r = run_cli("bench search --rows 20000 --dim 64 --queries 3 --no-compare --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"exact\": true"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace torchclip
