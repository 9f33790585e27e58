#include "io/safetensors.h"

#include "io/fsutil.h"
#include "util/json.h"
#include "util/json_value.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

namespace torchclip {
namespace {

struct DType {
  const char* name;
  at::ScalarType type;
  size_t size;
};
const DType kDTypes[] = {{"F32", at::kFloat, 4}, {"F16", at::kHalf, 2}, {"BF16", at::kBFloat16, 2}, {"F64", at::kDouble, 8},
                         {"I64", at::kLong, 8},  {"I32", at::kInt, 4},  {"I16", at::kShort, 2},    {"I8", at::kChar, 1},
                         {"U8", at::kByte, 1},   {"BOOL", at::kBool, 1}};

/// A small strict JSON reader for the header: objects, arrays, strings, non-negative integers.
class Json {
 public:
  Json(const std::string& text, const std::string& file) : s_(text), file_(file) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw SafetensorsError(fmt::format("{}: header JSON, byte {}: {}", file_, pos_, what));
  }
  void ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  bool peek(char c) {
    ws();
    return pos_ < s_.size() && s_[pos_] == c;
  }
  void expect(char c) {
    if (!peek(c)) fail(fmt::format("expected '{}'", c));
    ++pos_;
  }
  std::string string() {
    if (!peek('"')) fail("expected '\"'");
    try {
      return read_json_string(s_, pos_);
    } catch (const JsonError& e) {
      pos_ = e.offset();
      const std::string what = e.what();  // "invalid JSON at byte N: REASON": fail() names the byte
      fail(what.substr(what.find(": ") + 2));
    }
  }
  uint64_t integer() {
    ws();
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    if (pos_ == start || pos_ - start > 19) fail("expected a non-negative integer");
    return std::stoull(s_.substr(start, pos_ - start));
  }
  std::vector<uint64_t> int_array() {
    expect('[');
    std::vector<uint64_t> v;
    if (peek(']')) {
      ++pos_;
      return v;
    }
    for (;;) {
      v.push_back(integer());
      if (peek(',')) {
        ++pos_;
        continue;
      }
      expect(']');
      return v;
    }
  }
  bool at_end() {
    ws();
    return pos_ == s_.size();
  }
  size_t pos_ = 0;

 private:
  const std::string& s_;
  std::string file_;
};

const DType& dtype_by_name(const std::string& n, const std::string& file, const std::string& tensor) {
  for (const auto& d : kDTypes)
    if (n == d.name) return d;
  throw SafetensorsError(fmt::format("{}: tensor '{}' has unsupported dtype '{}'", file, tensor, n));
}

const DType& dtype_by_type(at::ScalarType t, const std::string& tensor) {
  for (const auto& d : kDTypes)
    if (t == d.type) return d;
  throw SafetensorsError(fmt::format("tensor '{}': dtype {} cannot be stored in safetensors", tensor, c10::toString(t)));
}

}  // namespace

namespace {

struct HeaderEntry {
  std::string name;
  const DType* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

/// The JSON header for `entries` (in data order) and `metadata`, unpadded.
std::string header_json(const std::vector<HeaderEntry>& entries, const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += fmt::format("{}{}:{}", first ? "" : ",", json_quote(k), json_quote(v));
      first = false;
    }
    header += "}";
  }
  for (const auto& e : entries) {
    std::string shape;
    for (size_t i = 0; i < e.shape.size(); ++i) shape += fmt::format("{}{}", i ? "," : "", e.shape[i]);
    header += fmt::format("{}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                          header.size() > 1 ? "," : "", json_quote(e.name), e.dtype->name, shape, e.begin, e.end);
  }
  return header + "}";
}

std::string length_prefix(uint64_t n) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<HeaderEntry> entries;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw SafetensorsError("a tensor may not be named __metadata__");
    const DType& d = dtype_by_type(t.scalar_type(), name);
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * d.size;
    entries.push_back({name, &d, c.sizes().vec(), offset, offset + bytes});
    offset += bytes;
    data.push_back(c);
  }
  std::string header = header_json(entries, metadata);
  while (header.size() % 8) header += ' ';  // align the data to 8 bytes
  std::string out;
  out.reserve(8 + header.size() + offset);
  out += length_prefix(header.size());
  out += header;
  for (const auto& c : data) out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  write_file_atomic(path, out);
}

struct SafetensorsWriter::Impl {
  std::string path, tmp;
  int fd = -1;
  size_t reserve = 0;
  uint64_t offset = 0, begin = 0;  // bytes written after the header; where the open tensor began
  std::vector<HeaderEntry> entries;
  const DType* open = nullptr;
  std::string open_name;

  void write_at(const void* data, size_t bytes, off_t at) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t w = ::pwrite(fd, p, bytes, at);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw SafetensorsError(fmt::format("{}: write failed: {}", tmp, std::strerror(errno)));
      p += w;
      bytes -= static_cast<size_t>(w);
      at += w;
    }
  }
};

SafetensorsWriter::SafetensorsWriter(const std::string& path, size_t header_reserve) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->reserve = (header_reserve + 7) / 8 * 8;
  try {
    impl_->tmp = make_temp_beside(path, impl_->fd);  // unique: two writers of one path never share it
  } catch (const std::runtime_error& e) {
    throw SafetensorsError(e.what());
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (impl_->fd >= 0) {  // not finished: leave nothing behind
    ::close(impl_->fd);
    ::unlink(impl_->tmp.c_str());
  }
}

void SafetensorsWriter::begin(const std::string& name, at::ScalarType type) {
  TORCH_CHECK(impl_->fd >= 0 && !impl_->open, "SafetensorsWriter: begin() while a tensor is open or after finish()");
  if (name == "__metadata__") throw SafetensorsError("a tensor may not be named __metadata__");
  for (const auto& e : impl_->entries)
    if (e.name == name) throw SafetensorsError(fmt::format("{}: tensor '{}' written twice", impl_->path, name));
  impl_->open = &dtype_by_type(type, name);
  impl_->open_name = name;
  impl_->begin = impl_->offset;
}

void SafetensorsWriter::write(const void* data, size_t bytes) {
  TORCH_CHECK(impl_->open, "SafetensorsWriter: write() outside begin()/end()");
  impl_->write_at(data, bytes, static_cast<off_t>(8 + impl_->reserve + impl_->offset));
  impl_->offset += bytes;
}

void SafetensorsWriter::end(std::vector<int64_t> shape) {
  TORCH_CHECK(impl_->open, "SafetensorsWriter: end() without begin()");
  uint64_t numel = 1;
  for (int64_t s : shape) numel *= static_cast<uint64_t>(s);
  const uint64_t bytes = impl_->offset - impl_->begin;
  TORCH_CHECK(numel * impl_->open->size == bytes, "SafetensorsWriter: tensor '", impl_->open_name, "' has ", bytes,
              " bytes, its shape needs ", numel * impl_->open->size);
  impl_->entries.push_back({impl_->open_name, impl_->open, std::move(shape), impl_->begin, impl_->offset});
  impl_->open = nullptr;
}

void SafetensorsWriter::finish(const std::map<std::string, std::string>& metadata) {
  TORCH_CHECK(impl_->fd >= 0 && !impl_->open, "SafetensorsWriter: finish() with a tensor open or twice");
  std::string header = header_json(impl_->entries, metadata);
  if (header.size() > impl_->reserve)
    throw SafetensorsError(fmt::format("{}: the header needs {} bytes, {} were reserved", impl_->path, header.size(),
                                       impl_->reserve));
  header.resize(impl_->reserve, ' ');  // the format allows trailing spaces in the header
  impl_->write_at((length_prefix(header.size()) + header).data(), 8 + header.size(), 0);
  const int fd = impl_->fd;
  impl_->fd = -1;
  try {
    commit_temp(fd, impl_->tmp, impl_->path);
  } catch (const std::runtime_error& e) {
    throw SafetensorsError(e.what());
  }
}

namespace {

/// Makes tensor `name` from its validated bytes: a copy, or a view of a mapping.
using MakeTensor = std::function<at::Tensor(const char* data, const std::vector<int64_t>& sizes, at::ScalarType type)>;

SafetensorsFile parse(std::string_view bytes, const std::string& file, std::optional<at::ScalarType> as,
                      const MakeTensor& make) {
  if (bytes.size() < 8) throw SafetensorsError(fmt::format("{}: {} bytes is too short for a safetensors file", file, bytes.size()));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  if (n > kSafetensorsMaxHeader)
    throw SafetensorsError(fmt::format("{}: header length {} exceeds the {} byte limit (not a safetensors file?)", file, n,
                                       kSafetensorsMaxHeader));
  if (8 + n > bytes.size())
    throw SafetensorsError(fmt::format("{}: header length {} runs past the end of the {}-byte file", file, n, bytes.size()));
  const std::string header(bytes.substr(8, n));
  const uint64_t data_size = bytes.size() - 8 - n;
  Json j(header, file);
  SafetensorsFile out;
  struct Entry {
    std::string name;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  std::set<std::string> names;
  j.expect('{');
  bool first = true;
  while (!j.peek('}')) {
    if (!first) j.expect(',');
    first = false;
    const std::string name = j.string();
    j.expect(':');
    if (!names.insert(name).second) throw SafetensorsError(fmt::format("{}: tensor '{}' appears twice", file, name));
    if (name == "__metadata__") {
      j.expect('{');
      bool f2 = true;
      while (!j.peek('}')) {
        if (!f2) j.expect(',');
        f2 = false;
        std::string k = j.string();
        j.expect(':');
        out.metadata[k] = j.string();
      }
      j.expect('}');
      continue;
    }
    std::string dtype;
    std::vector<uint64_t> shape, offsets;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    j.expect('{');
    bool f3 = true;
    while (!j.peek('}')) {
      if (!f3) j.expect(',');
      f3 = false;
      const std::string key = j.string();
      j.expect(':');
      if (key == "dtype" && !has_dtype) dtype = j.string(), has_dtype = true;
      else if (key == "shape" && !has_shape) shape = j.int_array(), has_shape = true;
      else if (key == "data_offsets" && !has_offsets) offsets = j.int_array(), has_offsets = true;
      else j.fail(fmt::format("tensor '{}': unexpected or repeated key '{}'", name, key));
    }
    j.expect('}');
    if (!has_dtype || !has_shape || !has_offsets || offsets.size() != 2)
      throw SafetensorsError(fmt::format("{}: tensor '{}' needs dtype, shape and data_offsets [begin, end]", file, name));
    const DType& d = dtype_by_name(dtype, file, name);
    uint64_t numel = 1, nonzero = 1;  // nonzero: the product of the non-zero dimensions, which strides need
    for (uint64_t s : shape) {
      if (s > static_cast<uint64_t>(INT64_MAX))
        throw SafetensorsError(fmt::format("{}: tensor '{}' has a dimension of {}, past the int64 range", file, name, s));
      if (s != 0 && nonzero > static_cast<uint64_t>(INT64_MAX) / s)
        throw SafetensorsError(fmt::format("{}: tensor '{}' shape overflows the int64 range", file, name));
      if (s != 0) nonzero *= s;
      numel *= s;
    }
    if (offsets[0] > offsets[1] || offsets[1] > data_size)
      throw SafetensorsError(fmt::format("{}: tensor '{}' data_offsets [{}, {}] are outside the {} data bytes", file, name,
                                         offsets[0], offsets[1], data_size));
    if (numel > UINT64_MAX / d.size || numel * d.size != offsets[1] - offsets[0])
      throw SafetensorsError(fmt::format("{}: tensor '{}' is {} {} x {} elements = {} bytes, but data_offsets span {}",
                                         file, name, dtype, numel, d.size, numel * d.size, offsets[1] - offsets[0]));
    std::vector<int64_t> sizes(shape.begin(), shape.end());
    at::Tensor t = make(bytes.data() + 8 + n + offsets[0], sizes, d.type);
    if (as && at::isFloatingType(d.type)) t = t.to(*as);
    out.tensors.emplace(name, t);
    entries.push_back({name, offsets[0], offsets[1]});
  }
  j.expect('}');
  if (!j.at_end()) j.fail("trailing characters after the header object");
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t expected = 0;
  for (const auto& e : entries) {
    if (e.begin < expected)
      throw SafetensorsError(fmt::format("{}: tensor '{}' overlaps the previous tensor's bytes", file, e.name));
    if (e.begin > expected)
      throw SafetensorsError(fmt::format("{}: {} unused bytes before tensor '{}'", file, e.begin - expected, e.name));
    expected = e.end;
  }
  if (expected != data_size)
    throw SafetensorsError(fmt::format("{}: {} bytes after the last tensor are not described by the header", file,
                                       data_size - expected));
  return out;
}

at::Tensor copy_tensor(const char* data, const std::vector<int64_t>& sizes, at::ScalarType type) {
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
  if (t.nbytes()) std::memcpy(t.data_ptr(), data, t.nbytes());
  return t;
}

}  // namespace

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& file, std::optional<at::ScalarType> as) {
  return parse(bytes, file, as, copy_tensor);
}

SafetensorsFile load_safetensors(const std::string& path, std::optional<at::ScalarType> as) {
  return parse_safetensors(read_file(path), path, as);
}

FileMapping::FileMapping(std::string path, int fd, void* addr, size_t size, int64_t mtime)
    : path_(std::move(path)), fd_(fd), addr_(addr), size_(size), mtime_ns_(mtime) {}

FileMapping::~FileMapping() {
  ::munmap(addr_, size_);
  ::close(fd_);
}

void FileMapping::check_intact() const {
  const FileStat now = stat_fd(fd_);
  if (now.size < 0) throw SafetensorsError(fmt::format("{}: cannot stat: {}", path_, std::strerror(errno)));
  if (static_cast<size_t>(now.size) < size_)
    throw SafetensorsError(fmt::format("{}: the file was truncated while in use ({} bytes when opened, {} now); "
                                       "open it again",
                                       path_, size_, now.size));
  if (static_cast<size_t>(now.size) != size_ || now.mtime_ns != mtime_ns_)
    throw SafetensorsError(fmt::format("{}: the file was rewritten in place while in use; open it again (writers "
                                       "should replace it by renaming a new file over it)",
                                       path_));
}

SafetensorsFile map_safetensors(const std::string& path) {
  if (const std::string problem = file_problem(path); !problem.empty())
    throw SafetensorsError(fmt::format("{}: cannot open: {}", path.empty() ? "''" : path, problem));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SafetensorsError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw SafetensorsError(fmt::format("{}: cannot stat: {}", path, std::strerror(err)));
  }
  if (st.st_size == 0) {
    ::close(fd);
    throw SafetensorsError(fmt::format("{}: 0 bytes is too short for a safetensors file", path));
  }
  void* addr = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    throw SafetensorsError(fmt::format("{}: cannot map: {}", path, std::strerror(err)));
  }
  // The descriptor stays open with the mapping, so check_intact() can see what became of the file.
  auto mapping = std::make_shared<const FileMapping>(path, fd, addr, static_cast<size_t>(st.st_size), stat_fd(fd).mtime_ns);
  const std::string_view bytes(static_cast<const char*>(addr), static_cast<size_t>(st.st_size));
  SafetensorsFile f = parse(bytes, path, std::nullopt, [&](const char* data, const std::vector<int64_t>& sizes, at::ScalarType type) {
    const size_t align = c10::elementSize(type);
    if (reinterpret_cast<uintptr_t>(data) % align != 0) return copy_tensor(data, sizes, type);  // misaligned: copy
    return at::from_blob(const_cast<char*>(data), sizes, [mapping](void*) {}, at::TensorOptions().dtype(type));
  });
  f.mapping = mapping;
  return f;
}

}  // namespace torchclip
