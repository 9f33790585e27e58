#include "io/npy.h"

#include "io/fsutil.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

namespace torchclip {

void save_npy(const std::string& path, const at::Tensor& tensor) {
  const at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  std::string descr;
  switch (t.scalar_type()) {
    case at::kFloat: descr = "<f4"; break;
    case at::kHalf: descr = "<f2"; break;
    case at::kDouble: descr = "<f8"; break;
    case at::kLong: descr = "<i8"; break;
    default: TORCH_CHECK(false, path, ": .npy output supports float32, float16, float64 and int64, not ", t.scalar_type());
  }
  std::string shape;
  for (int64_t i = 0; i < t.dim(); ++i) shape += fmt::format("{}, ", t.size(i));
  if (t.dim() > 1) shape.resize(shape.size() - 2);
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, shape);
  // magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, ending in \n.
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  write_file_atomic(path, out);
}

}  // namespace torchclip
