// FAISS indexes beside an image index (search/ann.h) on synthetic embeddings with cluster
// structure, as real ones have: every type finds what the exact scan finds (recall@10 against
// search_index, the independent reference), a saved index answers as the built one did, an
// update refills the same training, and a file that belongs to another model or build is refused.
#include "search/ann.h"
#include "search/scan.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "support.h"

namespace torchclip {
namespace {

/// Unit rows around `clusters` random centres, the shape of CLIP embeddings: [n, dim] rows to
/// index and [queries, dim] queries drawn around the same centres (as text queries fall near
/// the images they describe).
struct Clustered {
  at::Tensor rows, queries;
};
Clustered clustered(int64_t n, int64_t queries, int64_t dim, int64_t clusters, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto centres = at::randn({clusters, dim}, gen);
  auto draw = [&](int64_t m) {
    auto x = centres.index_select(0, at::randint(clusters, {m}, gen)) + 0.35 * at::randn({m, dim}, gen);
    return x / x.norm(2, 1, true);
  };
  return {draw(n), draw(queries)};
}

std::vector<std::vector<int64_t>> rows_of(const std::vector<std::vector<SearchHit>>& hits) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& h : hits) {
    out.emplace_back();
    for (const auto& x : h) out.back().push_back(x.row);
  }
  return out;
}

TEST(Ann, EveryTypeFindsWhatTheExactScanFinds) {
  const auto data = clustered(6000, 50, 32, 40, 1);
  const auto rows = data.rows.to(at::kHalf);  // [N, E] as an index stores them
  const auto& queries = data.queries;         // [Q, E]
  const auto reference = rows_of(search_index(rows, queries, 10));
  struct Case {
    AnnOptions options;
    double min_recall;
  };
  const Case cases[] = {
      {AnnOptions().type("flat"), 0.999},
      {AnnOptions().type("ivf-flat").nlist(64), 0.9},
      {AnnOptions().type("ivf-pq").nlist(64).pq_m(8), 0.9},  // candidates reranked on the fp16 rows
      {AnnOptions().type("hnsw").hnsw_m(16), 0.95},  // FAISS adds in parallel, so graphs differ from run to run
  };
  for (const auto& c : cases) {
    const auto a = AnnIndex::build(rows, c.options);
    const auto hits = a.search(queries, 10, AnnSearchOptions(), rows);
    const double recall = recall_at_k(rows_of(hits), reference);
    std::cout << "[ ann ] " << c.options.type() << " recall@10 " << recall << "\n";
    EXPECT_GE(recall, c.min_recall) << c.options.type();
    for (const auto& h : hits) {
      ASSERT_EQ(h.size(), 10u);
      for (size_t j = 1; j < h.size(); ++j) EXPECT_GE(h[j - 1].score, h[j].score);
    }
  }
  // Visiting every list makes IVF-Flat exact.
  const auto ivf = AnnIndex::build(rows, AnnOptions().type("ivf-flat").nlist(64));
  EXPECT_DOUBLE_EQ(recall_at_k(rows_of(ivf.search(queries, 10, AnnSearchOptions().nprobe(64), rows)), reference), 1.0);
  // IVF-PQ's reranked scores are the exact ones of the stored rows.
  const auto pq = AnnIndex::build(rows, AnnOptions().type("ivf-pq").nlist(64).pq_m(8));
  const auto hit = pq.search(queries.slice(0, 0, 1), 1, AnnSearchOptions(), rows)[0][0];
  EXPECT_NEAR(hit.score, at::dot(rows[hit.row].to(at::kFloat), queries[0]).item<float>(), 1e-5);
}

TEST(Ann, SavedIndexesAnswerAsBuiltAndStaleOnesAreRefused) {
  const auto dir = test::temp_dir("ann");
  const auto data = clustered(3000, 20, 16, 20, 3);
  const auto &rows = data.rows, &queries = data.queries;
  for (const char* type : {"ivf-pq", "hnsw"}) {
    auto a = AnnIndex::build(rows, AnnOptions().type(type).nlist(32).pq_m(4));
    a.info()["model_fingerprint"] = "crc32:1";
    const std::string path = (dir / (std::string(type) + ".faiss")).string();
    const int64_t bytes = a.save(path);
    EXPECT_GT(bytes, 0);
    const std::string id = a.info()["build_id"];
    const auto b = AnnIndex::load(path, "crc32:1", 3000, id);
    EXPECT_EQ(b.info().at("bytes"), std::to_string(bytes));
    const auto x = a.search(queries, 5, AnnSearchOptions(), rows), y = b.search(queries, 5, AnnSearchOptions(), rows);
    for (size_t q = 0; q < x.size(); ++q)
      for (size_t j = 0; j < 5; ++j) {
        EXPECT_EQ(x[q][j].row, y[q][j].row);
        EXPECT_EQ(x[q][j].score, y[q][j].score);
      }
    auto err = test::error_of<std::runtime_error>([&] { AnnIndex::load(path, "crc32:2", 3000, id); });
    EXPECT_NE(err.find("built by model fingerprint crc32:1, the index beside it by crc32:2"), std::string::npos) << err;
    err = test::error_of<std::runtime_error>([&] { AnnIndex::load(path, "crc32:1", 3001, id); });
    EXPECT_NE(err.find("is not the one the index beside it was built with (3001 rows"), std::string::npos) << err;
    err = test::error_of<std::runtime_error>([&] { AnnIndex::load(path, "crc32:1", 3000, "other"); });
    EXPECT_NE(err.find("rebuild it with torchclip index --type " + std::string(type)), std::string::npos) << err;
  }
  std::ofstream(dir / "junk.faiss") << "not a faiss file at all";
  auto err = test::error_of<std::runtime_error>([&] { AnnIndex::load((dir / "junk.faiss").string(), "f", 1, "b"); });
  EXPECT_NE(err.find("junk.faiss: not a torchclip FAISS index"), std::string::npos) << err;
  std::filesystem::remove_all(dir);
}

TEST(Ann, ARefillKeepsTheTrainingAndEqualsTheFirstBuildOnTheSameRows) {
  const auto data = clustered(4000, 20, 16, 20, 5);
  const auto &rows = data.rows, &queries = data.queries;
  const auto a = AnnIndex::build(rows, AnnOptions().type("ivf-pq").nlist(32).pq_m(4));
  // Half the rows, then all again: the refilled index answers exactly as the first build.
  const auto half = a.refill(rows.slice(0, 0, 2000));
  EXPECT_EQ(half.info().at("rows"), "2000");
  EXPECT_NE(half.info().at("build_id"), a.info().at("build_id"));
  for (const auto& h : half.search(queries, 5, AnnSearchOptions(), rows.slice(0, 0, 2000)))
    for (const auto& x : h) EXPECT_LT(x.row, 2000);
  const auto again = half.refill(rows);
  const auto x = a.search(queries, 5, AnnSearchOptions(), rows), y = again.search(queries, 5, AnnSearchOptions(), rows);
  for (size_t q = 0; q < x.size(); ++q)
    for (size_t j = 0; j < 5; ++j) EXPECT_EQ(x[q][j].row, y[q][j].row);
  // HNSW has no training: a refill is a build with the same parameters, and it saves and loads.
  const auto dir = test::temp_dir("ann_refill");
  auto h = AnnIndex::build(rows.slice(0, 0, 2000), AnnOptions().type("hnsw").hnsw_m(12)).refill(rows);
  EXPECT_EQ(h.info().at("hnsw_m"), "12");
  EXPECT_EQ(h.info().at("rows"), "4000");
  h.info()["model_fingerprint"] = "f";
  const std::string path = (dir / "h.faiss").string();
  EXPECT_GT(h.save(path), 0);
  const auto loaded = AnnIndex::load(path, "f", 4000, h.info().at("build_id"));
  const auto hx = h.search(queries, 5, AnnSearchOptions(), rows), hy = loaded.search(queries, 5, AnnSearchOptions(), rows);
  for (size_t q = 0; q < hx.size(); ++q)
    for (size_t j = 0; j < 5; ++j) EXPECT_EQ(hx[q][j].row, hy[q][j].row);
  std::filesystem::remove_all(dir);
}

TEST(Ann, ImpossibleParametersAreErrorsNamingTheFlag) {
  const auto rows = clustered(300, 1, 16, 4, 7).rows;
  auto err = [&](const AnnOptions& o) { return test::error_of<std::invalid_argument>([&] { AnnIndex::build(rows, o); }); };
  EXPECT_NE(err(AnnOptions().type("ivf-flat").nlist(500)).find("--nlist 500 is more than the 300 rows"), std::string::npos);
  EXPECT_NE(err(AnnOptions().type("ivf-pq").nlist(8).pq_m(5)).find("--pq-m 5 must divide the embedding size 16"), std::string::npos);
  EXPECT_NE(err(AnnOptions().type("ivf-pq").nlist(8).pq_m(4).train_rows(100)).find("at least 256 training rows"), std::string::npos);
  EXPECT_NE(err(AnnOptions().type("lsh")).find("valid: exact, flat, ivf-flat, ivf-pq, hnsw, auto"), std::string::npos);
  EXPECT_EQ(default_ann_type(50000, 512, int64_t{24} << 30), "exact");
  EXPECT_EQ(default_ann_type(2000000, 512, int64_t{24} << 30), "hnsw");    // 4.6 GB of rows and links, under 6 GB
  EXPECT_EQ(default_ann_type(20000000, 512, int64_t{24} << 30), "ivf-pq");
}

}  // namespace
}  // namespace torchclip
