#include "report/gallery.h"

#include "data/transform.h"
#include "io/fsutil.h"

#include <fmt/format.h>
#if TORCHCLIP_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <string>
#include <vector>

namespace torchclip {

namespace {

std::string base64(const std::vector<unsigned char>& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == in.size()) {
    const uint32_t v = in[i] << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = (in[i] << 16) | (in[i + 1] << 8);
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

void write_gallery(const std::vector<std::string>& queries, const std::vector<std::vector<std::string>>& paths,
                   const std::vector<std::vector<float>>& scores, const std::string& html_path) {
  data::require_image_decoders("the HTML gallery (JPEG thumbnails)");
#if TORCHCLIP_HAVE_OPENCV
  std::string body;
  for (size_t q = 0; q < queries.size(); ++q) {
    body += fmt::format("<section><h2>{}</h2><div class=\"grid\">\n", html_escape(queries[q]));
    for (size_t i = 0; i < paths[q].size(); ++i) {
      std::string src;
      cv::Mat img = cv::imread(paths[q][i], cv::IMREAD_COLOR);
      if (!img.empty()) {
        const double f = 160.0 / std::max(img.cols, img.rows);
        if (f < 1) cv::resize(img, img, {}, f, f, cv::INTER_AREA);
        std::vector<unsigned char> jpg;
        cv::imencode(".jpg", img, jpg, {cv::IMWRITE_JPEG_QUALITY, 85});
        src = "data:image/jpeg;base64," + base64(jpg);
      }
      body += fmt::format("<figure><img src=\"{}\" alt=\"{}\"><figcaption>#{} {:.4f}<br><span>{}</span></figcaption></figure>\n",
                          src, html_escape(paths[q][i]), i + 1, scores[q][i], html_escape(paths[q][i]));
    }
    body += "</div></section>\n";
  }
  const std::string page = fmt::format(R"(<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>torchclip search</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 170px; background: #fff; padding: 5px; box-shadow: 0 1px 3px #0003; }}
img {{ width: 160px; height: 160px; object-fit: contain; background: #eee; image-rendering: pixelated; }}
figcaption {{ font-size: 12px; }} span {{ color: #666; word-break: break-all; }}
</style></head>
<body data-loaded="pending">
{}<script>
window.addEventListener('load', () => {{
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.loaded = ok + '/' + imgs.length;
}});
</script></body></html>
)",
                                       body);
  write_file_atomic(html_path, page);
#endif
}

}  // namespace torchclip
