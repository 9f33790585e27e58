#include "distributed/launch.h"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace torchclip::dist {

namespace {

std::atomic<int> g_forward{0};
extern "C" void on_launcher_signal(int sig) { g_forward = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

std::vector<std::string> self_command(const std::vector<std::string>& args, const std::vector<std::string>& drop) {
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) throw std::runtime_error(fmt::format("--nproc: cannot read /proc/self/exe: {}", std::strerror(errno)));
  std::vector<std::string> cmd = {std::string(exe, static_cast<size_t>(n))};
  for (size_t i = 0; i < args.size(); ++i) {
    bool dropped = false;
    for (const auto& flag : drop) {
      if (args[i] == flag) {
        ++i;  // and its value
        dropped = true;
      } else if (args[i].rfind(flag + "=", 0) == 0) {
        dropped = true;
      }
      if (dropped) break;
    }
    if (!dropped) cmd.push_back(args[i]);
  }
  return cmd;
}

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("--nproc: socket(): {}", std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("--nproc: could not find a free port on 127.0.0.1: " + err);
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

int launch_local(const std::vector<std::string>& argv, const LaunchOptions& o) {
  if (o.nproc < 1) throw std::invalid_argument(fmt::format("--nproc must be >= 1, got {}", o.nproc));
  if (argv.empty()) throw std::invalid_argument("launch_local: empty command");
  const int port = free_local_port();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const bool set_threads = o.split_threads && !std::getenv("OMP_NUM_THREADS");
  std::vector<std::string> common = {"WORLD_SIZE=" + std::to_string(o.nproc), "LOCAL_WORLD_SIZE=" + std::to_string(o.nproc),
                                     "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port),
                                     "GROUP_RANK=0", "ROLE_RANK=0"};
  if (set_threads) common.push_back("OMP_NUM_THREADS=" + std::to_string(std::max(1u, cores / o.nproc)));
  static const char* kOwn[] = {"RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=",
                               "GROUP_RANK=", "ROLE_RANK="};

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  g_forward = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids(o.nproc, -1);
  for (int r = 0; r < o.nproc; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      bool own = false;
      for (const char* k : kOwn) own |= std::strncmp(*e, k, std::strlen(k)) == 0;
      if (!own && !(set_threads && std::strncmp(*e, "OMP_NUM_THREADS=", 16) == 0)) env.emplace_back(*e);
    }
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.insert(env.end(), common.begin(), common.end());
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(fmt::format("--nproc: fork() failed: {}", std::strerror(errno)));
    if (pid == 0) {
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      ::execve(cargv[0], cargv.data(), cenv.data());
      std::fprintf(stderr, "--nproc: cannot run %s: %s\n", cargv[0], std::strerror(errno));
      ::_exit(127);
    }
    pids[r] = pid;
  }

  int first_failure = 0, live = o.nproc;
  std::chrono::steady_clock::time_point failed_at;
  bool terminated = false, killed = false;
  int forwarded = 0;
  while (live > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < o.nproc; ++r) {
        if (pids[r] != pid) continue;
        pids[r] = -1;
        --live;
        if (exit_code(status) != 0 && first_failure == 0) {
          first_failure = exit_code(status);
          failed_at = std::chrono::steady_clock::now();
          if (!g_forward)
            fmt::print(stderr, "--nproc: rank {} ended with {}; waiting up to {} s for the other ranks\n", r, describe(status),
                       o.grace_seconds);
        }
      }
      continue;
    }
    if (const int sig = g_forward.load(); sig && sig != forwarded) {
      for (pid_t p : pids)
        if (p > 0) ::kill(p, sig);  // each rank saves its checkpoint and exits
      forwarded = sig;
    }
    if (first_failure && !forwarded) {
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - failed_at).count();
      if (!terminated && waited > o.grace_seconds) {
        fmt::print(stderr, "--nproc: {} rank(s) still running {} s after a failure; stopping them\n", live, o.grace_seconds);
        for (pid_t p : pids)
          if (p > 0) ::kill(p, SIGTERM);
        terminated = true;
      } else if (terminated && !killed && waited > o.grace_seconds + 10) {
        for (pid_t p : pids)
          if (p > 0) ::kill(p, SIGKILL);
        killed = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return first_failure;
}

}  // namespace torchclip::dist
