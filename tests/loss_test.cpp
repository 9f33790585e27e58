#include "loss/loss.h"

#include "config/model_config.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <limits>

#include "support.h"

namespace torchclip {
namespace {

using Mat = std::vector<std::vector<double>>;

Mat to_mat(const at::Tensor& t) {
  auto c = t.to(at::kDouble).contiguous();
  Mat m(c.size(0), std::vector<double>(c.size(1)));
  for (int64_t i = 0; i < c.size(0); ++i)
    for (int64_t j = 0; j < c.size(1); ++j) m[i][j] = c[i][j].item<double>();
  return m;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t k = 0; k < a.size(); ++k) s += a[k] * b[k];
  return s;
}

/// Mean over rows of -log softmax(row)[target].
double ce_rows(const Mat& logits, int64_t offset = 0) {
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    double mx = -1e300, z = 0;
    for (double v : logits[i]) mx = std::max(mx, v);
    for (double v : logits[i]) z += std::exp(v - mx);
    total += -(logits[i][i + offset] - mx - std::log(z));
  }
  return total / logits.size();
}

Mat scaled_sims(const Mat& a, const Mat& b, double s) {
  Mat m(a.size(), std::vector<double>(b.size()));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < b.size(); ++j) m[i][j] = s * dot(a[i], b[j]);
  return m;
}

struct Batch {
  at::Tensor img, txt;
};

Batch features(int64_t n, int64_t e, uint64_t seed, at::ScalarType dtype = at::kDouble) {
  at::manual_seed(seed);
  auto img = at::randn({n, e}, dtype), txt = at::randn({n, e}, dtype);
  return {img / img.norm(2, -1, true), txt / txt.norm(2, -1, true)};
}

ContrastiveLoss loss_from(const std::string& yaml) { return make_loss(parse_loss_config(YAML::Load(yaml), "test")); }

at::Tensor scalar(double v) { return at::scalar_tensor(v, at::kDouble); }

TEST(ClipLoss, TwoByTwoByHand) {
  // img = [e1, e2], txt = [e1, (e1+e2)/sqrt2], scale 2. Similarities: [[1, r], [0, r]], r = 1/sqrt2.
  const double r = 1 / std::sqrt(2.0);
  auto img = at::tensor({1.0, 0.0, 0.0, 1.0}, at::kDouble).view({2, 2});
  auto txt = at::tensor({1.0, 0.0, r, r}, at::kDouble).view({2, 2});
  auto loss = make_loss("clip")->forward({img, txt, scalar(2.0)});
  // Image rows: [2, 2r] target 0; [0, 2r] target 1. Text rows (txt @ img^T): [2, 0] target 0; [2r, 2r] target 1.
  auto nll = [](double target, double other) { return -target + std::log(std::exp(target) + std::exp(other)); };
  const double expected = ((nll(2, 2 * r) + nll(2 * r, 0)) / 2 + (nll(2, 0) + nll(2 * r, 2 * r)) / 2) / 2;
  EXPECT_NEAR(loss.item<double>(), expected, 1e-12);
}

TEST(ClipLoss, MatchesLoopReference) {
  auto b = features(6, 5, 1);
  const double s = 14.3;
  auto loss = make_loss("clip")->forward({b.img, b.txt, scalar(s)});
  auto I = to_mat(b.img), T = to_mat(b.txt);
  EXPECT_NEAR(loss.item<double>(), (ce_rows(scaled_sims(I, T, s)) + ce_rows(scaled_sims(T, I, s))) / 2, 1e-10);
}

TEST(InfoNCELoss, DirectionsTemperatureAndExtraNegatives) {
  auto b = features(5, 4, 2);
  auto extra = features(3, 4, 3).txt;
  auto I = to_mat(b.img), T = to_mat(b.txt), X = to_mat(extra);
  Mat TX = T;
  TX.insert(TX.end(), X.begin(), X.end());
  const double tau = 0.1;
  auto i2t = loss_from("name: infonce\ndirection: image_to_text\ntemperature: 0.1\n");
  EXPECT_NEAR(i2t->forward({b.img, b.txt, scalar(99.0)}).item<double>(), ce_rows(scaled_sims(I, T, 1 / tau)), 1e-10);
  LossInput with_extra{b.img, b.txt, scalar(99.0)};
  with_extra.extra_text_features = extra;
  EXPECT_NEAR(i2t->forward(with_extra).item<double>(), ce_rows(scaled_sims(I, TX, 1 / tau)), 1e-10);
  auto t2i = loss_from("name: infonce\ndirection: text_to_image\n");  // learned: uses logit_scale
  EXPECT_NEAR(t2i->forward({b.img, b.txt, scalar(7.0)}).item<double>(), ce_rows(scaled_sims(T, I, 7.0)), 1e-10);
  auto both = loss_from("name: infonce\n");
  EXPECT_NEAR(both->forward({b.img, b.txt, scalar(7.0)}).item<double>(),
              make_loss("clip")->forward({b.img, b.txt, scalar(7.0)}).item<double>(), 1e-12);
}

double distance(const std::vector<double>& a, const std::vector<double>& b, bool cosine) {
  if (cosine) return 1 - dot(a, b) / std::sqrt(dot(a, a) * dot(b, b));
  double s = 0;
  for (size_t k = 0; k < a.size(); ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
  return std::sqrt(s);
}

TEST(ContrastiveLoss, MatchesLoopReference) {
  auto b = features(5, 3, 4);
  auto I = to_mat(b.img), T = to_mat(b.txt);
  for (bool cosine : {true, false}) {
    const double m = cosine ? 0.9 : 1.2;
    double pos = 0, neg = 0;
    for (size_t i = 0; i < I.size(); ++i)
      for (size_t j = 0; j < T.size(); ++j) {
        const double d = distance(I[i], T[j], cosine);
        if (i == j) pos += d * d;
        else neg += std::pow(std::max(0.0, m - d), 2);
      }
    const double expected = 0.5 * pos / 5 + 0.5 * neg / 20;
    auto loss = loss_from(fmt::format("name: contrastive\nmargin: {}\ndistance: {}\n", m, cosine ? "cosine" : "euclidean"));
    EXPECT_NEAR(loss->forward({b.img, b.txt, scalar(1.0)}).item<double>(), expected, 1e-10) << cosine;
  }
}

/// One direction of the triplet loss, written as the papers state it.
double triplet_reference(const Mat& A, const Mat& C, double m, const std::string& mining, bool cosine) {
  double total = 0;
  int64_t count = 0;
  for (size_t i = 0; i < A.size(); ++i) {
    const double ap = distance(A[i], C[i], cosine);
    double hardest = 1e300, nearest_outside = 1e300, farthest = -1e300;
    for (size_t j = 0; j < C.size(); ++j) {
      if (j == i) continue;
      const double an = distance(A[i], C[j], cosine);
      if (mining == "all") {
        total += std::max(0.0, m + ap - an);
        ++count;
      }
      hardest = std::min(hardest, an);
      farthest = std::max(farthest, an);
      if (an > ap) nearest_outside = std::min(nearest_outside, an);
    }
    if (mining == "hardest") total += std::max(0.0, m + ap - hardest), ++count;
    if (mining == "semi-hard") total += std::max(0.0, m + ap - (nearest_outside < 1e300 ? nearest_outside : farthest)), ++count;
  }
  return total / count;
}

TEST(TripletLoss, EachMiningMatchesLoopReference) {
  auto b = features(6, 3, 5);
  auto I = to_mat(b.img), T = to_mat(b.txt);
  for (const std::string mining : {"hardest", "semi-hard", "all"}) {
    for (bool cosine : {true, false}) {
      const double m = 0.3;
      const double expected =
          (triplet_reference(I, T, m, mining, cosine) + triplet_reference(T, I, m, mining, cosine)) / 2;
      auto loss = loss_from(fmt::format("name: triplet\nmargin: {}\nmining: {}\ndistance: {}\n", m, mining,
                                        cosine ? "cosine" : "euclidean"));
      EXPECT_NEAR(loss->forward({b.img, b.txt, scalar(1.0)}).item<double>(), expected, 1e-10) << mining << cosine;
    }
  }
}

TEST(TripletLoss, SemiHardFallsBackToFarthestNegative) {
  // Positives farther than every negative: no semi-hard negative exists for either anchor.
  auto img = at::tensor({1.0, 0.0, 0.0, 1.0}, at::kDouble).view({2, 2});
  auto txt = at::tensor({0.0, 1.0, 1.0, 0.0}, at::kDouble).view({2, 2});
  auto loss = loss_from("name: triplet\nmargin: 0.1\nmining: semi-hard\n")->forward({img, txt, scalar(1.0)});
  // d_ap = 1 (orthogonal), d_an = 0 for the only negative: loss = 0.1 + 1 - 0.
  EXPECT_NEAR(loss.item<double>(), 1.1, 1e-12);
}

TEST(SigLipLoss, MatchesLoopReference) {
  auto b = features(4, 3, 6);
  auto I = to_mat(b.img), T = to_mat(b.txt);
  const double s = 10, bias = -10;
  double total = 0;
  for (size_t i = 0; i < I.size(); ++i)
    for (size_t j = 0; j < T.size(); ++j) {
      const double z = i == j ? 1 : -1, logit = s * dot(I[i], T[j]) + bias;
      total += std::log1p(std::exp(-z * logit));  // -log sigmoid(z * logit)
    }
  LossInput in{b.img, b.txt, scalar(s)};
  in.logit_bias = scalar(bias);
  EXPECT_NEAR(make_loss("siglip")->forward(in).item<double>(), total / 4, 1e-10);
}

TEST(SigLipLoss, WithoutBiasSaysHowToFixTheConfig) {
  auto b = features(2, 3, 0);
  try {
    make_loss("siglip")->forward({b.img, b.txt, scalar(10)});
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("init_logit_bias"), std::string::npos);
  }
}

TEST(Losses, GradcheckInDouble) {
  auto b = features(4, 3, 7);
  auto extra = features(2, 3, 8).txt;
  for (const std::string yaml : {"name: clip", "name: infonce\ndirection: both", "name: infonce\ntemperature: 0.5",
                                 "name: contrastive\nmargin: 1.5", "name: contrastive\ndistance: euclidean\nmargin: 1.5",
                                 "name: triplet\nmining: all\nmargin: 0.5", "name: triplet\nmining: hardest\nmargin: 0.5",
                                 "name: triplet\nmining: semi-hard\nmargin: 0.5\ndistance: euclidean", "name: siglip"}) {
    auto loss = loss_from(yaml);
    auto fn = [&](const std::vector<at::Tensor>& in) {
      LossInput li{in[0], in[1], in[2].exp(), in[3]};
      if (yaml.find("infonce") != std::string::npos) li.extra_text_features = extra;
      return loss->forward(li);
    };
    EXPECT_TRUE(test::gradcheck(fn, {b.img, b.txt, scalar(std::log(5.0)), scalar(-2.0)})) << yaml;
  }
}

/// Simulates a data-parallel group inside one process: rank r's all_gather returns every rank's
/// features, with gradients flowing only where the real collective would let them.
class SimulatedGather : public FeatureGather {
 public:
  SimulatedGather(std::vector<at::Tensor> image, std::vector<at::Tensor> text, int64_t rank)
      : image_(std::move(image)), text_(std::move(text)), rank_(rank) {}
  int64_t rank() const override { return rank_; }
  int64_t world_size() const override { return static_cast<int64_t>(image_.size()); }
  std::vector<at::Tensor> all_gather(const at::Tensor& local, bool with_grad) const override {
    const auto& all = local.data_ptr() == image_[rank_].data_ptr() ? image_ : text_;
    std::vector<at::Tensor> out;
    for (const auto& t : all) out.push_back(with_grad ? t : t.detach());
    return out;
  }

 private:
  std::vector<at::Tensor> image_, text_;
  int64_t rank_;
};

TEST(Losses, DistributedViewsReproduceTheGlobalLoss) {
  // Two ranks of 3 samples each against one process with all 6: with gather_with_grad, the loss
  // averaged over ranks and its gradient equal the single-process ones, local_loss or not.
  // (Per-row means average exactly because both ranks hold the same number of rows.)
  auto b = features(6, 4, 9);
  for (const std::string name : {"clip", "siglip", "triplet", "contrastive", "infonce"}) {
    for (bool local : {false, true}) {
      auto global_img = b.img.clone().requires_grad_(true), global_txt = b.txt.clone().requires_grad_(true);
      LossInput gin{global_img, global_txt, scalar(8.0)};
      gin.logit_bias = scalar(-3.0);
      auto loss_fn = make_loss(name);
      auto global = loss_fn->forward(gin);
      global.backward();

      auto img = b.img.clone().requires_grad_(true), txt = b.txt.clone().requires_grad_(true);
      std::vector<at::Tensor> imgs = {img.slice(0, 0, 3), img.slice(0, 3)}, txts = {txt.slice(0, 0, 3), txt.slice(0, 3)};
      at::Tensor sum = scalar(0.0);
      for (int64_t r = 0; r < 2; ++r) {
        auto rank_loss = make_loss(name);
        rank_loss->set_distributed(std::make_shared<SimulatedGather>(imgs, txts, r),
                                   DistributedLossOptions().local_loss(local).gather_with_grad(true));
        LossInput in{imgs[r], txts[r], scalar(8.0)};
        in.logit_bias = scalar(-3.0);
        sum = sum + rank_loss->forward(in);
      }
      auto mean = sum / 2;  // DDP averages over ranks
      mean.backward();
      EXPECT_NEAR(mean.item<double>(), global.item<double>(), 1e-10) << name << " local=" << local;
      EXPECT_TRUE(test::all_close(img.grad(), global_img.grad(), 1e-10, 1e-8)) << name << " local=" << local;
      EXPECT_TRUE(test::all_close(txt.grad(), global_txt.grad(), 1e-10, 1e-8)) << name << " local=" << local;
    }
  }
}

TEST(Losses, WithoutGatherWithGradOnlyTheLocalSlotGetsGradient) {
  auto b = features(4, 3, 10);
  auto img = b.img.clone().requires_grad_(true), txt = b.txt.clone().requires_grad_(true);
  std::vector<at::Tensor> imgs = {img.slice(0, 0, 2), img.slice(0, 2)}, txts = {txt.slice(0, 0, 2), txt.slice(0, 2)};
  auto loss = make_loss("clip");
  loss->set_distributed(std::make_shared<SimulatedGather>(imgs, txts, 0), DistributedLossOptions().local_loss(true));
  loss->forward({imgs[0], txts[0], scalar(5.0)}).backward();
  EXPECT_GT(img.grad().slice(0, 0, 2).abs().sum().item<double>(), 0);
  EXPECT_EQ(img.grad().slice(0, 2).abs().sum().item<double>(), 0);  // rank 1's rows: no gradient here
}

TEST(Losses, RegistryListsNamesAndRejectsUnknown) {
  EXPECT_EQ(loss_names(), (std::vector<std::string>{"clip", "infonce", "contrastive", "triplet", "siglip"}));
  for (const auto& n : loss_names()) EXPECT_NO_THROW(make_loss(n)) << n;
  try {
    make_loss("npair");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("clip, infonce, contrastive, triplet, siglip"), std::string::npos);
  }
}

}  // namespace
}  // namespace torchclip
