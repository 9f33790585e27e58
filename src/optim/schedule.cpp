#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace torchclip {

double learning_rate(const ScheduleCfg& s, double base, int64_t step, int64_t total) {
  if (step < s.warmup_steps()) return base * (step + 1) / s.warmup_steps();
  switch (s.name()) {
    case ScheduleKind::kConst:
      return base;
    case ScheduleKind::kConstCooldown: {
      const int64_t start = total - s.cooldown_steps();
      if (step < start || s.cooldown_steps() == 0) return base;
      const double frac = static_cast<double>(step - start) / s.cooldown_steps();
      return base + (s.min_lr() - base) * frac;
    }
    case ScheduleKind::kCosine:
      break;
  }
  const int64_t e = step - s.warmup_steps(), es = std::max<int64_t>(1, total - s.warmup_steps());
  return s.min_lr() + 0.5 * (1 + std::cos(M_PI * e / es)) * (base - s.min_lr());
}

}  // namespace torchclip
