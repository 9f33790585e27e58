#include "text/bpe_tokenizer.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "support.h"

namespace torchclip {
namespace {

const Tokenizer& clip_bpe() {
  static auto tok = load_tokenizer("clip-bpe");
  return *tok;
}

std::string u8(const char32_t* s) { return text::utf8_encode(s); }

TEST(ClipBpe, KnownCaptionIds) {
  // open_clip.tokenize("a photo of a cat.")[0][:8]
  EXPECT_EQ(clip_bpe().encode_padded("a photo of a cat.", 8),
            (std::vector<int32_t>{49406, 320, 1125, 539, 320, 2368, 269, 49407}));
  EXPECT_EQ(clip_bpe().vocab_size(), 49408);
  EXPECT_EQ(clip_bpe().sot_id(), 49406);
  EXPECT_EQ(clip_bpe().eot_id(), 49407);
}

TEST(ClipBpe, TruncationKeepsEotLastAndPadsWithZero) {
  auto ids = clip_bpe().encode_padded("one two three four five six seven", 5);
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids.front(), 49406);
  EXPECT_EQ(ids.back(), 49407);
  auto padded = clip_bpe().encode_padded("dog", 6);
  EXPECT_EQ(padded[3], 0);
  EXPECT_EQ(padded[5], 0);
  auto t = tokenize(clip_bpe(), {"dog", "a photo of a cat."}, 77);
  EXPECT_EQ(t.sizes(), (at::IntArrayRef{2, 77}));
  EXPECT_EQ(t.scalar_type(), at::kLong);
  EXPECT_EQ(t[1].argmax().item<int64_t>(), 7);  // EOT is the largest id: argmax pooling finds it
}

TEST(ClipBpe, DecodeInvertsEncodeUpToCleaning) {
  EXPECT_EQ(clip_bpe().decode(clip_bpe().encode("A Photo of a CAT.")), "a photo of a cat . ");
  EXPECT_THROW(clip_bpe().decode({49408}), std::out_of_range);
}

TEST(ClipClean, MatchesPythonOnHandPickedCases) {
  // Expected strings computed with ftfy 6.3.1 + html.unescape + " ".join(split()) + lower().
  EXPECT_EQ(ClipBpeTokenizer::clean("  Hello\t\n World  "), "hello world");
  EXPECT_EQ(ClipBpeTokenizer::clean("&amp;amp;amp; &lt;b&gt;"), "& <b>");
  EXPECT_EQ(ClipBpeTokenizer::clean("<b>&amp;amp;amp;</b>"), "<b>&amp;</b>");  // '<' stops ftfy's unescape
  EXPECT_EQ(ClipBpeTokenizer::clean("&notit; &copy2023 &#x1F600; &#128;"), u8(U"\u00acit; \u00a92023 \U0001F600 \u20ac"));
  EXPECT_EQ(ClipBpeTokenizer::clean(u8(U"\u201cQuoted\u201d \ufb01sh \uff2c\uff2f\uff35\uff24")), "\"quoted\" fish loud");
  EXPECT_EQ(ClipBpeTokenizer::clean(u8(U"e\u0301")), u8(U"\u00e9"));                  // NFC
  EXPECT_EQ(ClipBpeTokenizer::clean(u8(U"\u039f\u0394\u039f\u03a3 \u03a3")), u8(U"\u03bf\u03b4\u03bf\u03c2 \u03c3"));
  EXPECT_EQ(ClipBpeTokenizer::clean(u8(U"\u0130")), u8(U"i\u0307"));
  EXPECT_EQ(ClipBpeTokenizer::clean("\x1b[36mblue\x1b[0m a\x01" "b"), "blue ab");
}

TEST(ClipClean, PretokenizerFollowsTheRegex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(ClipBpeTokenizer::pretokenize("it's 2024!!"), (V{"it", "'s", "2", "0", "2", "4", "!!"}));
  EXPECT_EQ(ClipBpeTokenizer::pretokenize("''s !'s"), (V{"''", "s", "!'", "s"}));
  EXPECT_EQ(ClipBpeTokenizer::pretokenize("<start_of_text>x"), (V{"<start_of_text>", "x"}));
  EXPECT_EQ(ClipBpeTokenizer::pretokenize(u8(U"'\u017f")), (V{u8(U"'\u017f")}));  // long s folds to s
}

TEST(SentencePiece, TrainEncodeDecodeRoundTrip) {
  auto dir = test::temp_dir("spm");
  const std::string corpus = (dir / "captions.txt").string();
  {
    std::ofstream f(corpus);
    const char* things[] = {"dog", "cat", "sneaker", "bag", "shirt", "coat", "dress", "sandal"};
    const char* styles[] = {"a photo of a", "a blurry picture of the", "a close-up of my", "an image showing a"};
    for (int i = 0; i < 400; ++i) f << styles[i % 4] << " " << things[(i * 7) % 8] << " number " << i << "\n";
  }
  auto model = train_sentencepiece(SentencePieceTrainOptions().input(corpus).out((dir / "tok").string()).vocab_size(120));
  auto tok = load_tokenizer(model);
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->sot_id(), 2);
  EXPECT_EQ(tok->eot_id(), 3);
  auto ids = tok->encode("A Photo of a Dog");
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(tok->decode(ids), "a photo of a dog");  // lowercase normalisation
  auto padded = tok->encode_padded("a photo of a dog", 32);
  EXPECT_EQ(padded.front(), 2);
  EXPECT_EQ(padded[ids.size() + 1], 3);
  EXPECT_EQ(padded.back(), 0);
  std::filesystem::remove_all(dir);
}

TEST(Tokenizer, ClearErrorsForBadFiles) {
  auto dir = test::temp_dir("tokerr");
  try {
    load_tokenizer("no/such/tokenizer.model");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("clip-bpe"), std::string::npos) << e.what();
  }
  const std::string bad = (dir / "bad.model").string();
  std::ofstream(bad) << "not a model";
  try {
    load_tokenizer(bad);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.model"), std::string::npos) << e.what();
  }
  const std::string gz = (dir / "bad.txt.gz").string();
  std::ofstream(gz) << "plain text, too short";
  EXPECT_THROW(load_tokenizer(gz), std::runtime_error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace torchclip
