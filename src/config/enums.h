// The enum-like options of every config, each parsed once (by the config reader, or by
// parse_enum for a command-line flag) and compared as enum values everywhere else.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchclip {

/// Image-tower pooling: the class token, or the mean of the patch tokens.
enum class VisionPool { kTok, kAvg };
/// Text-tower pooling: position of the largest id (CLIP's EOT), first eos_id, first or last token.
enum class TextPool { kArgmax, kEos, kFirst, kLast };
/// Text projection: a linear map to embed_dim, or none (width == embed_dim).
enum class TextProj { kLinear, kNone };
/// Text positions: learned (OpenCLIP) or fixed sinusoids (Vaswani et al. 2017, not saved).
enum class PosEmbed { kLearnable, kSinusoidal };
/// InfoNCE directions.
enum class Direction { kBoth, kImageToText, kTextToImage };
/// Pairwise distances of the margin losses: 1 - cos, or L2 between normalised features.
enum class Distance { kCosine, kEuclidean };
/// Triplet negatives: the hardest (VSE++), semi-hard (FaceNet), or all of them.
enum class Mining { kHardest, kSemiHard, kAll };
/// Training precision: fp32, or bf16 autocast.
enum class Precision { kFp32, kBf16 };
/// Image resizing.
/// - `kPil`: Pillow's antialiased bicubic resampling (what open_clip's preprocess runs),
///   reproduced exactly: the same filter, support, fixed-point weights and rounding, so pixels
///   match PIL's to the byte.
/// - `kFast`: OpenCV (bilinear then box shrink, or bicubic enlarge): about 2x faster on large
///   photos, differing from PIL by a few levels per pixel.
enum class ResizeMode { kPil, kFast };
/// Where training images are normalised: by the loader's workers into float batches, or on the
/// model's device from uint8 batches (4x fewer bytes to copy to a GPU, no float work on the
/// host); auto: device on CUDA, worker on CPU.
enum class NormalizeOn { kAuto, kWorker, kDevice };
/// Learning-rate schedule after warmup.
enum class ScheduleKind { kCosine, kConst, kConstCooldown };
/// c10d backend: gloo on CPU and nccl on CUDA (auto), or one of them.
enum class Backend { kAuto, kGloo, kNccl };
/// ZeRO sharding of data-parallel training: none, the optimizer state (stage 1), or the
/// optimizer state and the averaged gradients (stage 2).
enum class Shard { kNone, kOptimizer, kGradients };
/// Model parallelism: both towers on every rank (together), or the image tower on rank 0 and
/// the text tower on rank 1 (split).
enum class Towers { kTogether, kSplit };

/// The names of an enum's values, in declaration order (as written in YAML and on flags).
template <typename E>
struct EnumNames;

#define TORCHCLIP_ENUM_NAMES(E, ...)                                   \
  template <>                                                          \
  struct EnumNames<E> {                                                \
    static const std::vector<std::string>& get() {                     \
      static const std::vector<std::string> names = {__VA_ARGS__};     \
      return names;                                                    \
    }                                                                  \
  };

TORCHCLIP_ENUM_NAMES(VisionPool, "tok", "avg")
TORCHCLIP_ENUM_NAMES(TextPool, "argmax", "eos", "first", "last")
TORCHCLIP_ENUM_NAMES(TextProj, "linear", "none")
TORCHCLIP_ENUM_NAMES(PosEmbed, "learnable", "sinusoidal")
TORCHCLIP_ENUM_NAMES(Direction, "both", "image_to_text", "text_to_image")
TORCHCLIP_ENUM_NAMES(Distance, "cosine", "euclidean")
TORCHCLIP_ENUM_NAMES(Mining, "hardest", "semi-hard", "all")
TORCHCLIP_ENUM_NAMES(Precision, "fp32", "bf16")
TORCHCLIP_ENUM_NAMES(ResizeMode, "pil", "fast")
TORCHCLIP_ENUM_NAMES(NormalizeOn, "auto", "worker", "device")
TORCHCLIP_ENUM_NAMES(ScheduleKind, "cosine", "const", "const-cooldown")
TORCHCLIP_ENUM_NAMES(Backend, "auto", "gloo", "nccl")
TORCHCLIP_ENUM_NAMES(Shard, "none", "optimizer", "gradients")
TORCHCLIP_ENUM_NAMES(Towers, "together", "split")
#undef TORCHCLIP_ENUM_NAMES

/// The name of `value` ("tok", "semi-hard", ...).
template <typename E>
const std::string& enum_name(E value) {
  return EnumNames<E>::get().at(static_cast<size_t>(value));
}

/// True and sets `out` when `name` is one of E's names.
template <typename E>
bool try_parse_enum(const std::string& name, E& out) {
  const auto& names = EnumNames<E>::get();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) {
      out = static_cast<E>(i);
      return true;
    }
  return false;
}

/// Parses a flag value; anything else throws std::invalid_argument naming `where` (the flag or
/// key) and the choices.
template <typename E>
E parse_enum(const std::string& name, const std::string& where) {
  E out{};
  if (!try_parse_enum(name, out))
    throw std::invalid_argument(
        fmt::format("{}: \"{}\" is not one of: {}", where, name, fmt::join(EnumNames<E>::get(), ", ")));
  return out;
}

}  // namespace torchclip
