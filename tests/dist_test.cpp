// c10d data parallelism in one process: ranks are threads, each with its own TCPStore client and
// Gloo process group, exactly as separate processes would have. The reference for every loss is
// the same loss computed by one process over the concatenated batch.
#include "distributed/dist.h"
#include "distributed/launch.h"
#include "loss/loss.h"
#include "optim/fused_adamw.h"
#include "train/step.h"
#include "support.h"

#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <thread>

namespace torchclip {
namespace {

using test::all_close;

/// Runs fn(group) on `world` ranks (threads) and rethrows the first rank's error.
void on_ranks(int world, const std::function<void(dist::Group&)>& fn, double timeout = 30) {
  // c10d's flight recorder is one per process; process groups of several ranks in one process
  // race on it (a rank thread was seen spinning forever in FlightRecorder::record, and one
  // crashed). Real ranks are processes, each with its own; this harness turns it off.
  static const int no_recorder = ::setenv("TORCH_FR_BUFFER_SIZE", "0", 1);
  (void)no_recorder;
  const int port = dist::free_local_port();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        dist::Env env;
        env.rank = r;
        env.world_size = world;
        env.master_port = port;
        auto group = dist::Group::init(env, dist::GroupOptions().timeout_seconds(timeout));
        fn(*group);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

std::shared_ptr<dist::Group> shared(dist::Group& g) { return std::shared_ptr<dist::Group>(&g, [](dist::Group*) {}); }

at::Tensor unit_rows(int64_t n, int64_t e, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = at::randn({n, e}, gen, at::kDouble);
  return x / x.norm(2, -1, true);
}

struct Case {
  std::string loss;
  bool local_loss, gather_with_grad;
};

class GatheredLoss : public ::testing::TestWithParam<Case> {};

// Rank r sees rows [rB, (r+1)B). With gather_with_grad the mean of the ranks' losses is the
// one-process loss and each rank's feature gradient is W times the one-process gradient of its
// rows (averaging parameter gradients over W ranks then gives exactly the one-process gradient).
// Without it (global loss), each rank gets the one-process gradient of its rows alone, i.e. the
// averaged parameter gradient is 1/W of the one-process one: OpenCLIP's documented behaviour.
TEST_P(GatheredLoss, MatchesOneProcessOverTheWholeBatch) {
  const Case c = GetParam();
  const int W = 2;
  const int64_t B = 5, E = 8;
  auto img = unit_rows(W * B, E, 1), txt = unit_rows(W * B, E, 2);
  const YAML::Node yaml = YAML::Load("{name: " + c.loss + ", local_loss: " + (c.local_loss ? "true" : "false") +
                                     ", gather_with_grad: " + (c.gather_with_grad ? "true" : "false") + "}");
  auto config = parse_loss_config(yaml, "test");
  // One process, batch W*B.
  auto ref_img = img.clone().requires_grad_(true), ref_txt = txt.clone().requires_grad_(true);
  auto scale = at::full({}, 7.0, at::kDouble).requires_grad_(true);
  auto bias = at::full({}, -3.0, at::kDouble);
  auto ref_loss = make_loss(config)->forward({ref_img, ref_txt, scale, bias});
  ref_loss.backward();
  std::vector<double> losses(W);
  std::vector<at::Tensor> gi(W), gt(W), gs(W);
  on_ranks(W, [&](dist::Group& g) {
    const int64_t r = g.rank();
    auto loss = make_loss(config);
    loss->set_distributed(std::make_shared<dist::GroupGather>(shared(g)), config.distributed());
    auto li = img.narrow(0, r * B, B).clone().requires_grad_(true), lt = txt.narrow(0, r * B, B).clone().requires_grad_(true);
    auto s = at::full({}, 7.0, at::kDouble).requires_grad_(true);
    auto l = loss->forward({li, lt, s, bias});
    l.backward();
    losses[r] = l.item<double>();
    gi[r] = li.grad();
    gt[r] = lt.grad();
    gs[r] = s.grad();
  });
  EXPECT_NEAR((losses[0] + losses[1]) / W, ref_loss.item<double>(), 1e-12);
  const double factor = c.gather_with_grad ? W : 1;
  for (int r = 0; r < W; ++r) {
    EXPECT_TRUE(all_close(gi[r], factor * ref_img.grad().narrow(0, r * B, B), 1e-12, 1e-9)) << "image rows of rank " << r;
    EXPECT_TRUE(all_close(gt[r], factor * ref_txt.grad().narrow(0, r * B, B), 1e-12, 1e-9)) << "text rows of rank " << r;
  }
  // The scale is not gathered: its averaged gradient is the one-process one (margin losses do
  // not use it).
  ASSERT_EQ(gs[0].defined(), scale.grad().defined());
  if (scale.grad().defined()) {
    EXPECT_TRUE(all_close((gs[0] + gs[1]) / W, scale.grad(), 1e-12, 1e-9));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Dist, GatheredLoss,
    ::testing::Values(Case{"clip", false, true}, Case{"clip", true, true}, Case{"clip", false, false},
                      Case{"siglip", false, true}, Case{"siglip", true, true}, Case{"infonce", true, true},
                      Case{"contrastive", true, true}, Case{"contrastive", false, true}, Case{"triplet", true, true},
                      Case{"triplet", false, true}),
    [](const auto& info) {
      return info.param.loss + (info.param.local_loss ? "_local" : "_global") +
             (info.param.gather_with_grad ? "_withgrad" : "_nograd");
    });

TEST(Dist, GradientAveragerMeansEveryGradientInSeveralBuckets) {
  on_ranks(2, [](dist::Group& g) {
    const double r = static_cast<double>(g.rank());
    std::vector<at::Tensor> params = {at::zeros({3, 4}).requires_grad_(true), at::zeros({5}).requires_grad_(true),
                                      at::zeros({2, 2}).requires_grad_(true), at::zeros({7}).requires_grad_(true)};
    params[0].mutable_grad() = at::full({3, 4}, 1.0 + r);
    params[1].mutable_grad() = at::arange(5, at::kFloat) * (r + 1);
    if (g.rank() == 0) params[2].mutable_grad() = at::full({2, 2}, 4.0);  // rank 1: no gradient this step
    params[3].mutable_grad() = at::full({7}, r == 0 ? -2.0 : 6.0);
    dist::GradientAverager avg(shared(g), params, dist::AveragerOptions().bucket_bytes(40));
    EXPECT_GE(avg.buckets(), 3);
    avg.average();
    EXPECT_TRUE(params[0].grad().equal(at::full({3, 4}, 1.5)));
    EXPECT_TRUE(all_close(params[1].grad(), at::arange(5, at::kFloat) * 1.5));
    EXPECT_TRUE(params[2].grad().equal(at::full({2, 2}, 2.0)));
    EXPECT_TRUE(params[3].grad().equal(at::full({7}, 2.0)));
  });
}

// Overlap: armed before the last backward, the gradient hooks start every bucket's all-reduce
// while backward runs (in bucket order on both ranks); the averages are those of averaging after
// backward, and gradients of an earlier (unarmed) backward are accumulated, not reduced twice.
TEST(Dist, GradientAveragerOverlapsBackwardWithTheSameAverages) {
  on_ranks(2, [](dist::Group& g) {
    const double r = static_cast<double>(g.rank());
    std::vector<at::Tensor> params;
    for (int64_t n : {6, 4, 9, 3, 5}) params.push_back(at::ones({n}).requires_grad_(true));
    dist::GradientAverager avg(shared(g), params, dist::AveragerOptions().bucket_bytes(40));
    ASSERT_GE(avg.buckets(), 3);
    auto backward = [&](double scale) {  // d/dp_i of sum_i (c_i * p_i^2).sum() = 2 c_i p_i, c_i = scale (i + 1)
      at::Tensor loss = at::zeros({});
      for (size_t i = 0; i < params.size(); ++i) loss = loss + (scale * (i + 1) * params[i].pow(2)).sum();
      loss.backward();
    };
    backward(1.0 + r);  // a first micro-batch: accumulates only
    EXPECT_EQ(avg.last_overlap().started_in_backward, 0);
    avg.arm();
    backward(3.0 * (1.0 + r));
    avg.average();
    // Per rank: 2 (i + 1) (1 + 3) (1 + r); mean over r in {0, 1}: 2 (i + 1) 4 1.5.
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(all_close(params[i].grad(), at::full_like(params[i], 12.0 * (i + 1)))) << i;
    const auto& o = avg.last_overlap();
    EXPECT_EQ(o.buckets, avg.buckets());
    EXPECT_EQ(o.started_in_backward, avg.buckets());  // every bucket started by the hooks
    EXPECT_GT(o.bytes, 0);
    // A plain step afterwards (not armed): every bucket starts in average(), same result rule.
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    backward(1.0 + r);
    avg.average();
    EXPECT_EQ(avg.last_overlap().started_in_backward, 0);
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(all_close(params[i].grad(), at::full_like(params[i], 3.0 * (i + 1)))) << i;
  });
}

// ZeRO's partition: contiguous runs in backward (reverse) order with about equal bytes, whole
// tensors only; a tensor goes to the side of the mark where most of it lies.
TEST(Dist, PartitionCutsReverseOrderIntoRunsOfAboutEqualBytes) {
  auto sized = [](std::vector<int64_t> n) {
    std::vector<at::Tensor> v;
    for (auto x : n) v.push_back(at::zeros({x}));
    return v;
  };
  EXPECT_EQ(dist::partition_parameters(sized({10, 10, 10, 10}), 2), (std::vector<int64_t>{1, 1, 0, 0}));
  // 103 elements, mark 51.5: the three small ones (reverse order first) and then the big one.
  EXPECT_EQ(dist::partition_parameters(sized({100, 1, 1, 1}), 2), (std::vector<int64_t>{1, 0, 0, 0}));
  EXPECT_EQ(dist::partition_parameters(sized({5, 5, 5, 5, 5, 5, 5, 5}), 4), (std::vector<int64_t>{3, 3, 2, 2, 1, 1, 0, 0}));
  // Fewer tensors than ranks: some rank owns nothing, none owns out of range.
  const auto few = dist::partition_parameters(sized({7, 7}), 4);
  for (auto o : few) EXPECT_TRUE(o >= 0 && o < 4);
  EXPECT_EQ(dist::partition_parameters(sized({3, 4}), 1), (std::vector<int64_t>{0, 0}));
}

// ZeRO stage 2's reduction: each bucket is summed onto its owner, which gets the mean; the other
// rank keeps no gradient of it. Then the owners' updated values reach every rank.
TEST(Dist, ReduceToOwnersKeepsOnlyOwnedGradientsAndBroadcastSendsOwnersValues) {
  on_ranks(2, [](dist::Group& g) {
    const double r = static_cast<double>(g.rank());
    std::vector<at::Tensor> params;
    for (int64_t n : {6, 4, 9, 3, 5, 8}) params.push_back(at::ones({n}).requires_grad_(true));
    const auto owners = dist::partition_parameters(params, 2);
    dist::GradientAverager avg(shared(g), params,
                               dist::AveragerOptions().bucket_bytes(24).owners(owners).reduce_to_owner(true));
    EXPECT_GE(avg.buckets(), 3);
    at::Tensor loss = at::zeros({});
    for (size_t i = 0; i < params.size(); ++i) loss = loss + ((1.0 + r) * (i + 1) * params[i].pow(2)).sum();
    avg.arm();
    loss.backward();  // gradient 2 (i + 1) (1 + r); mean over ranks 3 (i + 1)
    avg.average();
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_EQ(avg.owns(i), owners[i] == g.rank());
      if (avg.owns(i)) {
        EXPECT_TRUE(all_close(params[i].grad(), at::full_like(params[i], 3.0 * (i + 1)))) << i;
      } else {
        EXPECT_FALSE(params[i].grad().defined()) << i;
      }
    }
    {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i)
        params[i].fill_(avg.owns(i) ? 10.0 * (i + 1) + owners[i] : -1.0);  // -1: the stale copies
    }
    avg.broadcast_from_owners();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(params[i].equal(at::full_like(params[i], 10.0 * (i + 1) + owners[i]))) << i;
  });
}

// More ranks than parameters: ranks that own nothing still take part in every collective, in
// the same order, and end with the owners' values.
TEST(Dist, RanksThatOwnNothingStillTakePartInEveryCollective) {
  on_ranks(4, [](dist::Group& g) {
    std::vector<at::Tensor> params = {at::ones({3}).requires_grad_(true), at::ones({5}).requires_grad_(true)};
    const auto owners = dist::partition_parameters(params, 4);
    dist::GradientAverager avg(shared(g), params, dist::AveragerOptions().owners(owners).reduce_to_owner(true));
    const double r = static_cast<double>(g.rank());
    ((1.0 + r) * (params[0].sum() + 2.0 * params[1].sum())).backward();  // gradients (1 + r) and 2 (1 + r)
    avg.average();  // mean over r = 0..3 of (1 + r): 2.5
    for (size_t i = 0; i < 2; ++i) {
      if (avg.owns(i)) {
        EXPECT_TRUE(all_close(params[i].grad(), at::full_like(params[i], 2.5 * (i + 1)))) << i;
      } else {
        EXPECT_FALSE(params[i].grad().defined()) << i;
      }
    }
    {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < 2; ++i) params[i].fill_(avg.owns(i) ? 7.0 + i : -1.0);
    }
    avg.broadcast_from_owners();
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(params[i].equal(at::full_like(params[i], 7.0 + i))) << i;
  });
}

// A pipeline's plumbing on 4 ranks laid out as 2 stages x 2 replicas: sends arrive in order at
// the next stage of the same replica; each stage's replicas form a subgroup whose all-reduce sums
// only theirs, and whose string gather keeps to its own keys.
TEST(Dist, SendReceiveInOrderAndSubgroupsReduceTheirOwnRanks) {
  on_ranks(4, [](dist::Group& g) {
    const int64_t stage = g.rank() % 2, replica = g.rank() / 2;
    if (stage == 0) {
      auto a = g.send_async(at::full({3}, 10.0 * (g.rank() + 1)), g.rank() + 1);
      auto b = g.send_async(at::arange(5, at::kFloat) + g.rank(), g.rank() + 1);
      a.wait();
      b.wait();
    } else {
      at::Tensor a = at::empty({3}), b = at::empty({5});
      g.recv_async(a, g.rank() - 1).wait();
      g.recv_async(b, g.rank() - 1).wait();
      EXPECT_TRUE(a.equal(at::full({3}, 10.0 * g.rank())));  // from rank - 1: 10 (rank - 1 + 1)
      EXPECT_TRUE(b.equal(at::arange(5, at::kFloat) + (g.rank() - 1)));
    }
    auto sub = g.new_group({stage, stage + 2}, "stage-" + std::to_string(stage));
    EXPECT_EQ(sub->rank(), replica);
    EXPECT_EQ(sub->world_size(), 2);
    std::vector<at::Tensor> v{at::full({2}, static_cast<double>(g.rank()))};
    sub->all_reduce_sum(v);
    EXPECT_TRUE(v[0].equal(at::full({2}, static_cast<double>(2 * stage + 2))));  // stage + (stage + 2)
    const auto names = sub->all_gather_strings("rank " + std::to_string(g.rank()));
    EXPECT_EQ(names, (std::vector<std::string>{"rank " + std::to_string(stage), "rank " + std::to_string(stage + 2)}));
    EXPECT_THROW(g.new_group({(stage + 1) % 2}, "not-mine"), std::exception);
  });
}

// The pipeline step as two stages in one process: with the same batch on both, one step runs
// and the last stage reports a finite loss; when the stages' batches hold other captions (their
// loaders fell out of step), the last stage stops with an error saying so instead of training on
// mispaired images and captions, and the first stage's wait for its gradients fails too.
TEST(Dist, PipelineStagesRefuseBatchesWithOtherCaptions) {
  ModelConfig mc;
  mc.embed_dim(16)
      .vision_cfg(VisionCfg().image_size(16).patch_size(8).layers({2}).width(32).head_width(16))
      .text_cfg(TextCfg().context_length(6).vocab_size(50).width(32).heads(2).layers(1));
  for (const bool same : {true, false}) {
    std::vector<std::string> errors(2);
    std::vector<double> loss(2, -1);
    on_ranks(2, [&](dist::Group& g) {
      CLIP model(mc);
      FusedAdamW optimizer(param_groups(model, OptimCfg()));
      TrainStep step(model, make_loss("clip"), optimizer, StepOptions().group(shared(g)).pipeline_stages(2).micro_batches(2));
      step.release_unowned_parameters();
      auto ids = at::randint(1, 50, {4, 6}, at::kLong);  // [B, T]: the threads draw differently
      if (same) ids = at::arange(24, at::kLong).view({4, 6}) % 50;
      try {
        loss[g.rank()] = step.run({MicroBatch{at::rand({4, 3, 16, 16}), ids}}, 1e-3).read().loss;
      } catch (const std::exception& e) {
        errors[g.rank()] = e.what();
      }
    }, /*timeout=*/10);
    if (same) {
      EXPECT_EQ(errors, (std::vector<std::string>{"", ""}));
      EXPECT_TRUE(std::isfinite(loss[0]) && loss[0] > 0) << loss[0];
      EXPECT_EQ(loss[0], loss[1]);  // every rank reads the last stage's loss
    } else {
      EXPECT_NE(errors[1].find("holds other captions than stage 0's"), std::string::npos) << errors[1];
      EXPECT_FALSE(errors[0].empty());  // its neighbour is gone: the wait for gradients fails
    }
  }
}

TEST(Dist, StringsBroadcastAndIdentityCheck) {
  on_ranks(3, [](dist::Group& g) {
    auto all = g.all_gather_strings(std::string(static_cast<size_t>(g.rank()) * 3, 'a' + static_cast<char>(g.rank())));
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0], "");
    EXPECT_EQ(all[2], "cccccc");
    EXPECT_EQ(g.broadcast_string(g.rank() == 1 ? "from one" : "ignored", 1), "from one");
    auto same = at::arange(10, at::kFloat);
    dist::check_identical(g, {same}, "same");
    auto differs = g.rank() == 2 ? same + 1e-7 : same.clone();
    auto msg = test::error_of<std::runtime_error>([&] { dist::check_identical(g, {differs}, "params"); });
    EXPECT_NE(msg.find("params: rank 2 differs from rank 0"), std::string::npos) << msg;
    std::vector<at::Tensor> b = {at::full({2}, static_cast<float>(g.rank()))};
    dist::broadcast_from_rank0(g, b);
    EXPECT_TRUE(b[0].equal(at::zeros({2})));
  });
}

struct EnvVars {
  explicit EnvVars(std::map<std::string, std::string> vars) : vars_(std::move(vars)) {
    for (const auto& [k, v] : vars_) ::setenv(k.c_str(), v.c_str(), 1);
  }
  ~EnvVars() {
    for (const auto& [k, v] : vars_) ::unsetenv(k.c_str());
  }
  std::map<std::string, std::string> vars_;
};

TEST(Dist, EnvironmentIsReadAsTorchrunSetsIt) {
  EXPECT_FALSE(dist::Env::from_environment().distributed());
  {
    EnvVars v({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "node0"},
               {"MASTER_PORT", "29400"}});
    auto e = dist::Env::from_environment();
    EXPECT_EQ(e.rank, 1);
    EXPECT_EQ(e.world_size, 4);
    EXPECT_EQ(e.local_rank, 1);
    EXPECT_EQ(e.master_addr, "node0");
    EXPECT_EQ(e.master_port, 29400);
  }
  auto error = [](std::map<std::string, std::string> vars) {
    EnvVars v(std::move(vars));
    return test::error_of<std::invalid_argument>([] { dist::Env::from_environment(); });
  };
  EXPECT_NE(error({{"RANK", "0"}}).find("WORLD_SIZE is not"), std::string::npos);
  EXPECT_NE(error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK=2 is outside"), std::string::npos);
  EXPECT_NE(error({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("RANK='x' is not an integer"), std::string::npos);
  EXPECT_NE(error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("MASTER_PORT is not set"),
            std::string::npos);
  EXPECT_NE(error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}).find("outside 1..65535"),
            std::string::npos);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(Dist, RendezvousFailuresEndWithinTheTimeout) {
  dist::Env e;
  e.world_size = 2;
  e.master_port = dist::free_local_port();
  const auto opts = dist::GroupOptions().timeout_seconds(2);
  // A peer that never arrives.
  auto t0 = std::chrono::steady_clock::now();
  auto msg = test::error_of<std::runtime_error>([&] { dist::Group::init(e, opts); });
  EXPECT_NE(msg.find("rendezvous at 127.0.0.1:" + std::to_string(e.master_port) + " failed"), std::string::npos) << msg;
  EXPECT_LT(seconds_since(t0), 10);
  // No rank 0 at the address (rank 1 connecting to nothing).
  e.rank = 1;
  t0 = std::chrono::steady_clock::now();
  msg = test::error_of<std::runtime_error>([&] { dist::Group::init(e, opts); });
  EXPECT_NE(msg.find("rank 1/2: rendezvous"), std::string::npos) << msg;
  EXPECT_LT(seconds_since(t0), 10);
  // The port is taken.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(e.master_port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  e.rank = 0;
  t0 = std::chrono::steady_clock::now();
  msg = test::error_of<std::runtime_error>([&] { dist::Group::init(e, opts); });
  ::close(fd);
  EXPECT_NE(msg.find("rendezvous"), std::string::npos) << msg;
  EXPECT_LT(seconds_since(t0), 10);
  std::cout << "[ dist ] port in use: " << msg.substr(0, 300) << "\n";
}

TEST(Dist, OtherRanksWaitForRank0BeyondTheCollectiveTimeoutAndShareItsFailure) {
  on_ranks(
      2,
      [](dist::Group& g) {
        bool ran = false;
        g.run_on_rank0("slow evaluation", [&] {
          std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // > the 1 s timeout
          ran = true;
        });
        EXPECT_EQ(ran, g.rank() == 0);
        g.barrier();  // the group still works afterwards
        auto msg = test::error_of<std::runtime_error>(
            [&] { g.run_on_rank0("checkpoint at step 7", [] { throw std::runtime_error("disk full"); }); });
        if (g.rank() == 0) EXPECT_EQ(msg, "disk full");
        else EXPECT_NE(msg.find("rank 0 failed in checkpoint at step 7: error: disk full"), std::string::npos) << msg;
      },
      /*timeout=*/1);
}

TEST(Dist, UnknownBackendListsTheValidOnes) {
  dist::Env e;
  auto msg = test::error_of<std::invalid_argument>([&] { dist::Group::init(e, dist::GroupOptions().backend("mpi")); });
  EXPECT_NE(msg.find("'mpi' is not available in this build; valid: auto, gloo"), std::string::npos) << msg;
}

}  // namespace
}  // namespace torchclip
