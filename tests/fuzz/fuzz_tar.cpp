// libFuzzer harness: WebDataset tar shards (data/tar.h). The reader walks every member until the
// end-of-archive block; a bad archive must be a SampleError ("tar_truncated"). With OpenCV, the
// same file is also read as a WebDataset source, which groups members into samples by key.
#include "data/source.h"
#include "data/tar.h"
#include "fuzz_support.h"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = torchclip::fuzz::temp_file(data, size, ".tar");
  try {
    torchclip::data::TarReader reader(path);
    if (!reader.ok()) torchclip::fuzz::violated("cannot open " + path);
    std::string name, body;
    while (reader.next(name, body)) {
    }
  } catch (const torchclip::data::SampleError&) {
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
#if TORCHCLIP_HAVE_OPENCV
  try {
    torchclip::data::StreamSpec spec;
    spec.shuffle_buffer = 4;
    auto source = torchclip::data::webdataset_source(path);
    auto stream = source->open(spec);
    torchclip::data::RawSample sample;
    while (stream->next(sample)) {
    }
  } catch (const torchclip::data::SampleError&) {
  } catch (const std::exception& e) {
    torchclip::fuzz::undocumented(e);
  }
#endif
  return 0;
}
