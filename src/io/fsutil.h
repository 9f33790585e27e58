// Crash-safe file operations: write to a temporary name, fsync, rename, fsync the folder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace torchclip {

/// The whole file; throws std::runtime_error naming it.
std::string read_file(const std::string& path);
/// Writes PATH.tmp, fsyncs it, renames it to PATH and fsyncs the folder, so PATH is either the old
/// or the new content after a crash, never a mix. Throws std::runtime_error naming the path.
void write_file_atomic(const std::string& path, const std::string& data);
/// fsync a folder (after renames inside it).
void fsync_dir(const std::string& dir);
/// Runs a shell command and returns what it printed on stdout; `status` gets pclose's status
/// (-1 when the command could not be started).
std::string run_command(const std::string& command, int& status);
/// Lines of a text file (class names, templates, queries), without line ends, skipping empty
/// ones. Throws std::runtime_error naming the file.
std::vector<std::string> read_lines(const std::string& path);
/// CRC-32 (zlib) of bytes, for checkpoint manifests.
uint32_t crc32_of(const std::string& data);

}  // namespace torchclip
