#include "io/fsutil.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>
#include <stdexcept>

namespace torchclip {

std::string file_problem(const std::string& path) {
  if (path.empty()) return "the path is empty";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno == ENOENT ? "does not exist" : std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return "is a folder, not a file";
  if (!S_ISREG(st.st_mode)) return "is not a regular file";
  return "";
}

std::string read_file(const std::string& path) {
  // A folder opens as a stream whose size reads as -1: check what the path is first.
  if (const std::string problem = file_problem(path); !problem.empty())
    throw std::runtime_error(fmt::format("{}: cannot read: {}", path.empty() ? "''" : path, problem));
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open the file", path));
  std::string data(static_cast<size_t>(f.tellg()), '\0');
  f.seekg(0);
  f.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) throw std::runtime_error(fmt::format("{}: read failed", path));
  return data;
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

namespace {

/// The process's umask, read once (umask() can only be read by setting it).
mode_t process_umask() {
  static const mode_t mask = [] {
    const mode_t m = ::umask(0022);
    ::umask(m);
    return m;
  }();
  return mask;
}

FileStat from_stat(const struct stat& st) {
  return {static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
}

}  // namespace

FileStat stat_path(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? from_stat(st) : FileStat{};
}

FileStat stat_fd(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? from_stat(st) : FileStat{};
}

std::string make_temp_beside(const std::string& path, int& fd) {
  std::string templ = path + ".tmp.XXXXXX";
  fd = ::mkstemp(templ.data());
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot create a temporary beside it: {}", path, std::strerror(errno)));
  ::fchmod(fd, 0666 & ~process_umask());  // mkstemp makes it 0600
  return templ;
}

void commit_temp(int fd, const std::string& tmp, const std::string& path) {
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = !synced ? sync_errno : errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: {} failed: {}", path, !synced ? "fsync" : !closed ? "close" : "rename",
                                         std::strerror(err)));
  }
  fsync_dir(std::filesystem::path(path).parent_path().string());
}

bool is_temp_name(const std::string& name, const std::string& target) {
  const size_t p = name.rfind(".tmp");
  if (p == std::string::npos || p == 0 || (!target.empty() && name.compare(0, p, target) != 0) ||
      (!target.empty() && p != target.size()))
    return false;
  const std::string rest = name.substr(p + 4);
  if (rest.empty()) return true;
  if (rest.size() != 7 || rest[0] != '.') return false;
  return std::all_of(rest.begin() + 1, rest.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
}

int remove_stale_temps(const std::string& dir, const std::vector<std::string>& targets) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (std::none_of(targets.begin(), targets.end(), [&](const std::string& t) { return is_temp_name(name, t); })) continue;
    std::error_code rm;
    std::filesystem::remove_all(e.path(), rm);
    if (!rm) ++removed;
  }
  return removed;
}

void write_file_atomic(const std::string& path, const std::string& data) {
  int fd = -1;
  const std::string tmp = make_temp_beside(path, fd);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(fmt::format("{}: write failed: {}", path, std::strerror(err)));
    }
    done += static_cast<size_t>(w);
  }
  commit_temp(fd, tmp, path);
}

void check_output_path(const std::string& path, const std::string& what) {
  if (path.empty()) throw std::invalid_argument(fmt::format("{}: the output path is empty", what));
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.back() == '/' || fs::is_directory(path, ec))
    throw std::invalid_argument(fmt::format("{} '{}': names a folder; give a file name", what, path));
  const fs::path parent = fs::path(path).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  if (!fs::is_directory(dir, ec))
    throw std::invalid_argument(fmt::format("{} '{}': the folder {} does not exist", what, path, dir));
  if (::access(dir.c_str(), W_OK) != 0)
    throw std::invalid_argument(fmt::format("{} '{}': the folder {} is not writable", what, path, dir));
}

FolderLock::FolderLock(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error(fmt::format("{}: cannot create the folder: {}", dir, ec.message()));
  const std::string path = (std::filesystem::path(dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(fmt::format("{}: cannot open the lock file: {}", path, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[256] = {0};
    const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
    ::close(fd_);
    fd_ = -1;
    std::string who = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "";
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    if (err == EWOULDBLOCK)
      throw std::runtime_error(fmt::format("{}: another process is using this folder ({}); wait for it to finish or "
                                           "choose another folder",
                                           dir, who.empty() ? "see " + path : who));
    throw std::runtime_error(fmt::format("{}: cannot lock: {}", path, std::strerror(err)));
  }
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  const std::string me = fmt::format("pid {} on {}\n", ::getpid(), host);
  if (::ftruncate(fd_, 0) == 0) {
    const ssize_t w = ::pwrite(fd_, me.data(), me.size(), 0);
    (void)w;  // the pid is for messages only
  }
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

std::string run_command(const std::string& command, int& status) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (!p) {
    status = -1;
    return out;
  }
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  status = pclose(p);
  return out;
}

uint32_t crc32_of(const std::string& data) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t done = 0;
  while (done < data.size()) {  // zlib takes 32-bit lengths
    const uInt chunk = static_cast<uInt>(std::min<size_t>(data.size() - done, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data() + done), chunk);
    done += chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open the file", path));
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

}  // namespace torchclip
