#include "io/fsutil.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "support.h"

namespace torchclip {
namespace {

std::string with_header(const std::string& header, const std::string& data) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string error_of(const std::string& bytes) {
  try {
    parse_safetensors(bytes, "f.safetensors");
  } catch (const SafetensorsError& e) {
    return e.what();
  }
  return "<accepted>";
}

TEST(Safetensors, RoundTripKeepsNamesDtypesShapesValuesAndMetadata) {
  auto dir = test::temp_dir("st");
  const std::string path = (dir / "m.safetensors").string();
  std::map<std::string, at::Tensor> t = {{"a.weight", at::randn({3, 4})},
                                         {"b", at::randn({2}).to(at::kHalf)},
                                         {"c", at::randn({2, 2}).to(at::kBFloat16)},
                                         {"scalar", at::scalar_tensor(2.5)},
                                         {"ids", at::arange(5, at::kLong)},
                                         {"t", at::randn({4, 3}).t()}};  // non-contiguous input
  save_safetensors(path, t, {{"format", "pt"}});
  auto f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), t.size());
  for (const auto& [k, v] : t) {
    EXPECT_EQ(f.tensors.at(k).scalar_type(), v.scalar_type()) << k;
    EXPECT_TRUE(f.tensors.at(k).equal(v.contiguous())) << k;
  }
  EXPECT_EQ(f.tensors.at("scalar").dim(), 0);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  auto as32 = load_safetensors(path, at::kFloat);
  EXPECT_EQ(as32.tensors.at("b").scalar_type(), at::kFloat);
  EXPECT_EQ(as32.tensors.at("ids").scalar_type(), at::kLong);  // integers are not converted
  // Memory-mapped: the same tensors, without copies where aligned (outliving the file's name).
  {
    auto mapped = map_safetensors(path);
    std::filesystem::remove(path);
    for (const auto& [k, v] : t) EXPECT_TRUE(mapped.tensors.at(k).equal(v.contiguous())) << k;
    EXPECT_EQ(mapped.metadata.at("format"), "pt");
  }
  std::filesystem::remove_all(dir);
}

TEST(Safetensors, MappingRefusesMalformedFilesToo) {
  auto dir = test::temp_dir("stmap");
  const std::string path = (dir / "bad.safetensors").string();
  std::string header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  write_file_atomic(path, bytes + header + std::string(8, '\0'));  // 8 data bytes, 16 declared
  auto m = test::error_of<SafetensorsError>([&] { map_safetensors(path); });
  EXPECT_NE(m.find("outside the 8 data bytes"), std::string::npos) << m;
  m = test::error_of<SafetensorsError>([&] { map_safetensors((dir / "missing").string()); });
  EXPECT_NE(m.find("cannot open"), std::string::npos) << m;
  std::filesystem::remove_all(dir);
}

TEST(Safetensors, EveryMalformedCaseIsRefusedWithAMessage) {
  const std::string f32x2(8, '\0');
  auto ok = [&](const std::string& offsets) {
    return "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" + offsets + "}}";
  };
  EXPECT_EQ(error_of(with_header(ok("[0,8]"), f32x2)), "<accepted>");
  EXPECT_NE(error_of("abc").find("too short"), std::string::npos);
  std::string huge(8, '\xff');
  EXPECT_NE(error_of(huge).find("exceeds"), std::string::npos);
  std::string past = with_header(ok("[0,8]"), f32x2);
  past[0] = static_cast<char>(200);
  EXPECT_NE(error_of(past).find("runs past the end"), std::string::npos);
  EXPECT_NE(error_of(with_header("{\"x\":", "")).find("header JSON"), std::string::npos);
  EXPECT_NE(error_of(with_header(ok("[0,8]") + "x", f32x2)).find("trailing"), std::string::npos);
  EXPECT_NE(error_of(with_header(ok("[0,16]"), f32x2)).find("outside"), std::string::npos);
  EXPECT_NE(error_of(with_header(ok("[0,4]"), f32x2)).find("data_offsets span 4"), std::string::npos);
  EXPECT_NE(error_of(with_header("{\"x\":{\"dtype\":\"F9\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2))
                .find("unsupported dtype 'F9'"),
            std::string::npos);
  const std::string two = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                          "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  EXPECT_NE(error_of(with_header(two, f32x2)).find("appears twice"), std::string::npos);
  const std::string overlap = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  EXPECT_NE(error_of(with_header(overlap, f32x2)).find("overlaps"), std::string::npos);
  const std::string gap = "{\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  EXPECT_NE(error_of(with_header(gap, f32x2)).find("unused bytes"), std::string::npos);
  EXPECT_NE(error_of(with_header(ok("[0,8]"), f32x2 + "junk")).find("not described"), std::string::npos);
  EXPECT_NE(error_of(with_header("{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", f32x2)).find("needs dtype"), std::string::npos);
}

TEST(Fsutil, AtomicWriteReplacesAndCrcIsZlibs) {
  auto dir = test::temp_dir("fs");
  const std::string p = (dir / "x.txt").string();
  write_file_atomic(p, "first");
  write_file_atomic(p, "second");
  EXPECT_EQ(read_file(p), "second");
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
  EXPECT_EQ(crc32_of("123456789"), 0xCBF43926u);  // the CRC-32 check value
  EXPECT_THROW(read_file((dir / "none").string()), std::runtime_error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torchclip
