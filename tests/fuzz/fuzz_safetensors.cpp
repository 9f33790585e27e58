// libFuzzer harness: safetensors files (io/safetensors.h), read both ways: parsed from memory
// (copies, and with floating tensors converted) and memory-mapped from a file. Either way a bad
// file must be a SafetensorsError; a good one must read the same both ways. The index and tensor
// -file readers (ImageIndex::open, pack_source) read through map_safetensors.
#include "fuzz_support.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>

#include <cstring>
#include <string>

using torchclip::SafetensorsError;
using torchclip::SafetensorsFile;

namespace {

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  bool parsed = false, mapped = false;
  SafetensorsFile a, b;
  try {
    a = torchclip::parse_safetensors(bytes, "fuzz.safetensors");
    parsed = true;
    torchclip::parse_safetensors(bytes, "fuzz.safetensors", at::kFloat);
  } catch (const SafetensorsError&) {
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
  try {
    b = torchclip::map_safetensors(torchclip::fuzz::temp_file(data, size, ".safetensors"));
    mapped = true;
  } catch (const SafetensorsError&) {
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
  if (parsed && mapped) {
    if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size())
      torchclip::fuzz::violated("parse_safetensors and map_safetensors disagree on the header");
    for (const auto& [name, t] : a.tensors) {
      auto it = b.tensors.find(name);
      if (it == b.tensors.end() || !same_bytes(t, it->second))
        torchclip::fuzz::violated("parse_safetensors and map_safetensors disagree on tensor '" + name + "'");
    }
  }
  return 0;
}
