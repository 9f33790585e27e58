#include "data/tar.h"

#include "data/source.h"  // SampleError

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace torchclip::data {
namespace {

std::string field(const char* p, size_t n) { return std::string(p, strnlen(p, n)); }

uint64_t parse_size(const char* p) {
  uint64_t v = 0;
  if (static_cast<unsigned char>(p[0]) & 0x80) {  // base-256 (GNU), for members over 8 GiB
    for (int i = 1; i < 12; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
  }
  for (int i = 0; i < 12 && p[i]; ++i)
    if (p[i] >= '0' && p[i] <= '7') v = v * 8 + static_cast<uint64_t>(p[i] - '0');
  return v;
}

}  // namespace

TarReader::TarReader(const std::string& path) : path_(path), f_(path, std::ios::binary) {
  std::error_code ec;
  file_size_ = std::filesystem::file_size(path, ec);
}

bool TarReader::next(std::string& name, std::string& data) {
  std::string long_name;
  for (;;) {
    char h[512];
    f_.read(h, 512);
    if (f_.gcount() == 0) {  // writers end an archive with zero blocks; a cut-off file has none
      throw SampleError("tar_truncated", fmt::format("{}: the archive ends without its end-of-archive blocks", path_));
    }
    if (f_.gcount() < 512) throw SampleError("tar_truncated", fmt::format("{}: the archive ends inside a header", path_));
    if (std::all_of(h, h + 512, [](char c) { return c == 0; })) return false;  // end-of-archive block
    const uint64_t size = parse_size(h + 124);
    const auto pos = static_cast<uint64_t>(f_.tellg());
    if (size > file_size_ - std::min(pos, file_size_)) {
      throw SampleError("tar_truncated", fmt::format("{}: member '{}' claims {} bytes past the end of the archive",
                                                     path_, field(h, 100), size));
    }
    std::string body(size, '\0');
    f_.read(body.data(), static_cast<std::streamsize>(size));
    if (static_cast<uint64_t>(f_.gcount()) < size)
      throw SampleError("tar_truncated", fmt::format("{}: member '{}' is cut short", path_, field(h, 100)));
    f_.ignore(static_cast<std::streamsize>((512 - size % 512) % 512));
    const char type = h[156];
    if (type == 'L') {  // GNU long name of the next member
      long_name = body.substr(0, body.find('\0'));
      continue;
    }
    if (type == 'x') {  // pax extended header: "LEN path=NAME\n" records
      auto p = body.find(" path=");
      if (p != std::string::npos) long_name = body.substr(p + 6, body.find('\n', p) - p - 6);
      continue;
    }
    if (type != '0' && type != '\0') {  // directories, links, devices
      long_name.clear();
      continue;
    }
    const std::string prefix = std::memcmp(h + 257, "ustar", 5) == 0 ? field(h + 345, 155) : "";
    name = !long_name.empty() ? long_name : (prefix.empty() ? field(h, 100) : prefix + "/" + field(h, 100));
    data = std::move(body);
    return true;
  }
}

TarWriter::TarWriter(const std::string& path) : path_(path), f_(path, std::ios::binary | std::ios::trunc) {
  if (!f_) throw std::runtime_error(fmt::format("{}: cannot create the tar file", path));
}

TarWriter::~TarWriter() {
  try {
    if (!closed_) close();
  } catch (...) {  // destructors must not throw; close() explicitly to see errors
  }
}

void TarWriter::add(const std::string& name, const std::string& data) {
  if (name.size() > 100) throw std::invalid_argument(fmt::format("tar member name '{}' is over 100 bytes", name));
  char h[512] = {};
  std::memcpy(h, name.data(), name.size());
  std::snprintf(h + 100, 8, "%07o", 0644);
  std::snprintf(h + 108, 8, "%07o", 0);
  std::snprintf(h + 116, 8, "%07o", 0);
  std::snprintf(h + 124, 12, "%011llo", static_cast<unsigned long long>(data.size()));
  std::snprintf(h + 136, 12, "%011o", 0);
  h[156] = '0';
  std::memcpy(h + 257, "ustar\0" "00", 8);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h + 148, 8, "%06o", sum);
  f_.write(h, 512);
  f_.write(data.data(), static_cast<std::streamsize>(data.size()));
  static const char zeros[512] = {};
  f_.write(zeros, static_cast<std::streamsize>((512 - data.size() % 512) % 512));
}

void TarWriter::close() {
  static const char zeros[1024] = {};
  f_.write(zeros, 1024);
  f_.close();
  closed_ = true;
  if (!f_) throw std::runtime_error(fmt::format("{}: writing the tar file failed", path_));
}

}  // namespace torchclip::data
