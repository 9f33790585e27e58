// libFuzzer harness: tensor files (`torchclip data pack`, data::pack_source), the memory-mapped
// safetensors reader plus the checks a reader of our own files makes on top (metadata format,
// tensor names, dtypes, ranks, offsets into a byte tensor), every sample streamed. It stands in
// for the search index reader (ImageIndex::open), which reads its file the same way but links
// the whole inference stack. A bad file must be a std::runtime_error naming it.
#include "data/source.h"
#include "fuzz_support.h"

#include <stdexcept>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = torchclip::fuzz::temp_file(data, size, ".safetensors");
  torchclip::fuzz::read_every_sample<torchclip::data::StreamSpec, torchclip::data::RawSample>(
      [&] { return torchclip::data::pack_source(path); });
  return 0;
}
