// safetensors (Hugging Face's format): an 8-byte little-endian header length, a JSON header
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the
// bytes. Strict by design: every malformed file is refused with a message, never a crash.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchclip {

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The read-only memory mapping behind map_safetensors' tensors (which keep it alive).
class FileMapping {
 public:
  FileMapping(std::string path, int fd, void* addr, size_t size, int64_t mtime_ns);
  ~FileMapping();
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  /// Throws SafetensorsError naming the file when it was truncated or rewritten in place since it
  /// was mapped: the mapping would then mix new bytes with what was read at open, and touching
  /// pages past a new end raises SIGBUS. This detects, it cannot prevent: a truncation between
  /// this check and a read of the mapping still faults. (Writers that replace by rename, as
  /// torchclip's do, leave a mapping intact: it keeps the old file.)
  void check_intact() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_;
  void* addr_;
  size_t size_;
  int64_t mtime_ns_;
};

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  std::shared_ptr<const FileMapping> mapping;  // map_safetensors only
};

/// Header larger than this is refused (a hostile length would otherwise allocate gigabytes).
constexpr uint64_t kSafetensorsMaxHeader = 100 * 1024 * 1024;

/// Writes contiguous CPU copies of `tensors` (F32, F16, BF16, I64, I32, U8, BOOL) with `metadata`.
/// Written to PATH.tmp, fsync'd, then renamed over PATH. Throws SafetensorsError.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Writes a safetensors file tensor by tensor, each streamed in pieces, for files larger than
/// memory: the header goes last, into `header_reserve` bytes kept at the start (padded with
/// spaces, as the format allows). Written to a unique PATH.tmp.XXXXXX, fsync'd and renamed over
/// PATH by finish(); a writer destroyed before finish() removes its temporary.
class SafetensorsWriter {
 public:
  explicit SafetensorsWriter(const std::string& path, size_t header_reserve = 1 << 16);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  /// Starts tensor `name`; its bytes follow through write() until end(shape).
  void begin(const std::string& name, at::ScalarType type);
  void write(const void* data, size_t bytes);
  /// Ends the open tensor; `shape` must account for exactly the bytes written.
  void end(std::vector<int64_t> shape);
  void finish(const std::map<std::string, std::string>& metadata = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Reads and validates a whole file: header size, JSON syntax, duplicate names, known dtypes,
/// offsets in range, contiguous and non-overlapping, dtype x shape == byte length. With `as`,
/// floating tensors are converted to that dtype. Throws SafetensorsError naming the file.
SafetensorsFile load_safetensors(const std::string& path, std::optional<at::ScalarType> as = std::nullopt);

/// Parses from memory (the file's bytes); `name` is used in messages.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name,
                                  std::optional<at::ScalarType> as = std::nullopt);

/// Validates like load_safetensors but copies nothing: each tensor is a read-only view of a
/// memory mapping of the file (kept alive by the tensors; do not write to them). Tensors whose
/// bytes are not aligned to their element size are copied. Opening a multi-gigabyte file is
/// instant; pages are read when touched.
SafetensorsFile map_safetensors(const std::string& path);

}  // namespace torchclip
