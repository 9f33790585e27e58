// Crash-safe file operations: write to a temporary name, fsync, rename, fsync the folder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace torchclip {

/// Why `path` cannot be read as a file: "" when it is a regular file (or a link to one), else
/// "the path is empty", "is a folder, not a file", "does not exist", ...
std::string file_problem(const std::string& path);
/// The whole file; throws std::runtime_error naming it (a folder or an empty path included).
std::string read_file(const std::string& path);
/// Writes a unique PATH.tmp.XXXXXX beside PATH (two writers of one path never share it), fsyncs
/// it, renames it to PATH and fsyncs the folder, so PATH is either the old or the new content
/// after a crash, never a mix. On any failure the temporary is removed. Throws
/// std::runtime_error naming the path.
void write_file_atomic(const std::string& path, const std::string& data);
/// A unique temporary beside `path` (PATH.tmp.XXXXXX), created empty with the mode an ordinary
/// new file gets (0666 less the umask) and open for writing; returns its name and sets `fd`.
/// Throws std::runtime_error naming `path`.
std::string make_temp_beside(const std::string& path, int& fd);
/// Finishes a write begun with make_temp_beside: fsyncs and closes `fd` (always closed), renames
/// `tmp` over `path` and fsyncs the folder; on failure removes `tmp` and throws
/// std::runtime_error naming `path`.
void commit_temp(int fd, const std::string& tmp, const std::string& path);
/// Whether `name` is a temporary of a crash-safe write of `target`: "TARGET.tmp", or
/// "TARGET.tmp.XXXXXX" as make_temp_beside names them. An empty target matches any name.
bool is_temp_name(const std::string& name, const std::string& target = "");
/// Removes from `dir` the temporaries that interrupted writes (a crash, a full disk) left of
/// the files named `targets` (files or folders named by is_temp_name for one of them). Call only
/// while holding the folder's lock. Returns how many were removed.
int remove_stale_temps(const std::string& dir, const std::vector<std::string>& targets);
/// Size and modification time (ns) of a file, by path or by descriptor; -1 each when it cannot
/// be read.
struct FileStat {
  int64_t size = -1, mtime_ns = -1;
};
FileStat stat_path(const std::string& path);
FileStat stat_fd(int fd);
/// Checks, before any work, that `path` can be written as an output file: not empty, not a
/// folder, its folder exists and is writable. Throws std::invalid_argument naming `what` (the
/// flag or key) and the path.
void check_output_path(const std::string& path, const std::string& what);

/// An exclusive advisory lock (flock) on DIR/.lock for as long as the object lives, so that two
/// processes never write one run folder. The lock file records the holder's pid and host.
class FolderLock {
 public:
  /// Creates DIR if needed; throws std::runtime_error naming DIR and the holder when another
  /// process holds the lock.
  explicit FolderLock(const std::string& dir);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};
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
