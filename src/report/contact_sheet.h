// Search results as a PNG contact sheet.
#pragma once

#include <string>
#include <vector>

namespace torchclip {

/// A contact sheet: one tile per image path with its rank and score. Throws naming the file.
void write_contact_sheet(const std::vector<std::string>& paths, const std::vector<float>& scores, const std::string& title,
                         const std::string& png);

}  // namespace torchclip
