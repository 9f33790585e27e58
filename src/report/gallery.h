// Search results as a self-contained HTML page.
#pragma once

#include <string>
#include <vector>

namespace torchclip {

/// A self-contained HTML page (thumbnails inlined as JPEG data URIs) of each query's results.
/// `body[data-loaded]` becomes "loaded/total" once the page has loaded, for browser checks.
void write_gallery(const std::vector<std::string>& queries, const std::vector<std::vector<std::string>>& paths,
                   const std::vector<std::vector<float>>& scores, const std::string& html_path);

}  // namespace torchclip
