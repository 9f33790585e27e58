// FusedAdamW against LibTorch's own AdamW (the reference implementation of the same update),
// with two parameter groups (weight decay on one), amsgrad, a parameter without gradient, and
// a changing learning rate, as the trainer uses it.
#include "optim/fused_adamw.h"
#include "support.h"

namespace torchclip {
namespace {

TEST(FusedAdamW, MatchesLibTorchAdamWStepByStep) {
  for (bool amsgrad : {false, true}) {
    auto gen = at::detail::createCPUGenerator(5);
    std::vector<at::Tensor> init = {at::randn({7, 5}, gen), at::randn({5}, gen), at::randn({3, 3}, gen), at::randn({4}, gen)};
    auto clone = [&] {
      std::vector<at::Tensor> ps;
      for (const auto& t : init) ps.push_back(t.clone().requires_grad_(true));
      return ps;
    };
    auto a = clone(), b = clone();
    auto groups = [&](std::vector<at::Tensor>& ps) {
      auto opts = [&](double wd) {
        return std::make_unique<torch::optim::AdamWOptions>(
            torch::optim::AdamWOptions(1e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(wd).amsgrad(amsgrad));
      };
      std::vector<torch::optim::OptimizerParamGroup> g;
      g.emplace_back(std::vector<at::Tensor>{ps[0], ps[2]}, opts(0.2));
      g.emplace_back(std::vector<at::Tensor>{ps[1], ps[3]}, opts(0.0));
      return g;
    };
    torch::optim::AdamW reference(groups(a));
    FusedAdamW fused(groups(b));
    for (int step = 0; step < 12; ++step) {
      const double lr = 1e-2 * (step + 1) / 12;
      for (auto* opt : {static_cast<torch::optim::Optimizer*>(&reference), static_cast<torch::optim::Optimizer*>(&fused)})
        for (auto& g : opt->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      reference.zero_grad();
      fused.zero_grad();
      auto g = at::detail::createCPUGenerator(100 + step);
      for (size_t i = 0; i < init.size(); ++i) {
        if (i == 3 && step % 3 == 1) continue;  // sometimes no gradient: that parameter is skipped
        auto grad = at::randn(init[i].sizes(), g) * (i + 1);
        a[i].mutable_grad() = grad.clone();
        b[i].mutable_grad() = grad.clone();
      }
      reference.step();
      fused.step();
      for (size_t i = 0; i < init.size(); ++i)
        ASSERT_TRUE(test::all_close(b[i], a[i], 1e-6, 1e-5)) << "param " << i << " step " << step << " amsgrad " << amsgrad;
    }
    // The state is LibTorch's: step counts and moments agree.
    for (size_t i = 0; i < init.size(); ++i) {
      auto& sa = static_cast<torch::optim::AdamWParamState&>(*reference.state().at(a[i].unsafeGetTensorImpl()));
      auto& sb = static_cast<torch::optim::AdamWParamState&>(*fused.state().at(b[i].unsafeGetTensorImpl()));
      EXPECT_EQ(sa.step(), sb.step());
      EXPECT_TRUE(test::all_close(sb.exp_avg_sq(), sa.exp_avg_sq(), 1e-9, 1e-5));
    }
  }
}

TEST(FusedAdamW, AStepSkippedOnTheDeviceChangesNothingAndLaterStepsMatchTheReference) {
  // Steps 1, 2, a skipped one (found_inf = 1), then 3 and 4: the same parameters as LibTorch's
  // AdamW taking steps 1 to 4 with the same gradients, and the same step count once synced.
  auto gen = at::detail::createCPUGenerator(7);
  const at::Tensor init = at::randn({6, 4}, gen);
  std::vector<at::Tensor> grads;
  for (int i = 0; i < 5; ++i) grads.push_back(at::randn({6, 4}, gen));
  at::Tensor a = init.clone().requires_grad_(true), b = init.clone().requires_grad_(true);
  auto options = torch::optim::AdamWOptions(1e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(0.1);
  torch::optim::AdamW reference({a}, options);
  FusedAdamW fused({b}, options);
  const at::Tensor skip = at::ones({}, at::kFloat), take = at::zeros({}, at::kFloat);
  int used = 0;
  for (int i = 0; i < 5; ++i) {
    const bool skipped = i == 2;
    b.mutable_grad() = grads[i].clone();
    const at::Tensor before = b.detach().clone();
    fused.step_unless(skipped ? skip : take);
    if (skipped) {
      EXPECT_TRUE(at::equal(b.detach(), before)) << "a skipped step moved the parameters";
      continue;
    }
    a.mutable_grad() = grads[i].clone();
    reference.step();
    ++used;
    EXPECT_TRUE(test::all_close(b.detach(), a.detach(), 1e-6, 1e-5)) << "after step " << i;
  }
  fused.sync_state();
  auto& s = static_cast<torch::optim::AdamWParamState&>(*fused.state().at(b.unsafeGetTensorImpl()));
  EXPECT_EQ(s.step(), used);  // 4: the skipped step is not counted
  auto& r = static_cast<torch::optim::AdamWParamState&>(*reference.state().at(a.unsafeGetTensorImpl()));
  EXPECT_TRUE(test::all_close(s.exp_avg_sq(), r.exp_avg_sq(), 1e-9, 1e-5));
}

}  // namespace
}  // namespace torchclip
