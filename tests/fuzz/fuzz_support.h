// What the libFuzzer harnesses share: a per-process temporary file for readers that take a path,
// and the rule for exceptions. A documented exception (the reader's own error type, carrying a
// message) is the expected answer to a bad file; a crash, a sanitizer report or a hang is a
// finding. With TORCHCLIP_FUZZ_STRICT=1 an exception of any other type is a finding too: the
// reader leaked an error that does not name the file (a std::stoul, a c10::Error, a yaml-cpp
// conversion).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <fstream>
#include <string>
#include <typeinfo>

namespace torchclip::fuzz {

/// Writes `data` to a file in /dev/shm (TMPDIR when /dev/shm is missing) named for this process
/// and `suffix` (the extension readers look at), replacing the previous input; returns its path.
inline std::string temp_file(const uint8_t* data, size_t size, const std::string& suffix) {
  static const std::string dir = [] {
    if (access("/dev/shm", W_OK) == 0) return std::string("/dev/shm");
    const char* t = std::getenv("TMPDIR");
    return std::string(t ? t : "/tmp");
  }();
  const std::string path = dir + "/torchclip_fuzz_" + std::to_string(getpid()) + suffix;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  f.close();
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

/// An exception of a type the reader does not document: ignored, or a finding under
/// TORCHCLIP_FUZZ_STRICT=1.
inline void undocumented(const std::exception& e) {
  static const bool strict = [] {
    const char* s = std::getenv("TORCHCLIP_FUZZ_STRICT");
    return s && *s && *s != '0';
  }();
  if (!strict) return;
  std::fprintf(stderr, "fuzz: undocumented exception %s: %s\n", typeid(e).name(), e.what());
  std::abort();
}

/// Opens the sample source `make()` returns (data::SampleSource) and reads every sample of one
/// stream, keeping the source alive while its stream reads (streams point into their source).
/// A std::runtime_error naming the file is the expected answer to a bad file.
template <typename StreamSpec, typename RawSample, typename MakeSource>
void read_every_sample(MakeSource make) {
  try {
    auto source = make();
    auto stream = source->open(StreamSpec{});
    RawSample sample;
    while (stream->next(sample)) {
    }
  } catch (const std::runtime_error&) {
  } catch (const std::exception& e) {
    undocumented(e);
  }
}

/// A property the harness checks that does not hold: always a finding.
[[noreturn]] inline void violated(const std::string& what) {
  std::fprintf(stderr, "fuzz: %s\n", what.c_str());
  std::abort();
}

}  // namespace torchclip::fuzz
