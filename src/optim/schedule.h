// Learning-rate schedules as OpenCLIP's scheduler.py: linear warmup, then cosine decay, a
// constant rate, or a constant rate with a linear cooldown.
#pragma once

#include "config/train_config.h"

#include <cstdint>

namespace torchclip {

/// Learning rate at `step` of `total`: linear warmup base*(step+1)/warmup, then cosine to
/// min_lr, constant, or constant with a linear cooldown over the last cooldown_steps.
double learning_rate(const ScheduleCfg& s, double base, int64_t step, int64_t total);

}  // namespace torchclip
