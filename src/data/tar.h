// Minimal tar for WebDataset shards: a streaming reader of regular-file members (ustar, GNU long
// names, pax path records, base-256 sizes) and a ustar writer.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace torchclip::data {

class TarReader {
 public:
  explicit TarReader(const std::string& path);
  bool ok() const { return static_cast<bool>(f_); }
  /// The next regular file; false at the end of the archive. A short read or a size past the end
  /// of the file throws SampleError("tar_truncated") naming the shard and member.
  bool next(std::string& name, std::string& data);

 private:
  std::string path_;
  std::ifstream f_;
  uint64_t file_size_ = 0;
};

class TarWriter {
 public:
  /// Creates (truncates) `path`; throws std::runtime_error naming it on failure.
  explicit TarWriter(const std::string& path);
  ~TarWriter();
  void add(const std::string& name, const std::string& data);
  /// Writes the end-of-archive blocks and closes; throws if any write failed.
  void close();

 private:
  std::string path_;
  std::ofstream f_;
  bool closed_ = false;
};

}  // namespace torchclip::data
