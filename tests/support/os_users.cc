#include "tests/support/os_users.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

namespace dsb::testing {

namespace {

using Ms = std::chrono::milliseconds;

std::string RandomName() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof buf, "dsbt%08x", rd());
  return buf;
}

// Runs a shadow-utils command to completion (stdout/stderr captured). The
// tools lock /etc/passwd and /etc/group; tests running in parallel retry.
bool RunAdmin(const std::vector<std::string>& argv, std::string* why) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const Outcome o = RunProgramAs(Identity{::geteuid(), ::getegid(), {}}, argv, Ms(20000));
    if (o.exit_code == 0) return true;
    // 10: cannot lock /etc/group (groupadd/groupdel), 1: cannot lock /etc/passwd.
    const bool locked = o.output.find("lock") != std::string::npos;
    if (!locked) {
      *why = argv[0] + " failed (exit " + std::to_string(o.exit_code) + "): " + o.output;
      return false;
    }
    std::this_thread::sleep_for(Ms(20 + attempt * 10));  // back-off between lock attempts
  }
  *why = argv[0] + ": /etc/passwd stayed locked";
  return false;
}

std::string JoinGids(const std::vector<gid_t>& gids) {
  std::string out;
  for (gid_t g : gids) {
    const group* gr = ::getgrgid(g);
    if (gr == nullptr) continue;
    out += (out.empty() ? "" : ",") + std::string(gr->gr_name);
  }
  return out;
}

SpawnOptions OptionsAs(const Identity& who, const std::vector<std::string>& env) {
  SpawnOptions o;
  o.as = who;
  o.env = env;
  o.new_process_group = true;
  o.output = Output::kCapture;
  return o;
}

}  // namespace

bool CanSwitchUsers(std::string* why) {
  if (::geteuid() != 0) {
    *why = "not root: the security tests need throw-away users (useradd) and setuid";
    return false;
  }
  if (::access("/usr/sbin/useradd", X_OK) != 0 || ::access("/usr/sbin/groupadd", X_OK) != 0) {
    *why = "useradd/groupadd not found (Debian package passwd)";
    return false;
  }
  return true;
}

std::unique_ptr<TempGroup> TempGroup::Create(std::string* why) {
  if (!CanSwitchUsers(why)) return nullptr;
  auto g = std::unique_ptr<TempGroup>(new TempGroup());
  g->name_ = RandomName();
  if (!RunAdmin({"/usr/sbin/groupadd", g->name_}, why)) return nullptr;
  const group* gr = ::getgrnam(g->name_.c_str());
  if (gr == nullptr) {
    *why = "groupadd " + g->name_ + " succeeded but getgrnam cannot find it";
    return nullptr;
  }
  g->gid_ = gr->gr_gid;
  return g;
}

TempGroup::~TempGroup() {
  std::string why;
  if (!name_.empty()) (void)RunAdmin({"/usr/sbin/groupdel", name_}, &why);
}

std::unique_ptr<TempUser> TempUser::Create(std::string* why, std::vector<gid_t> supplementary,
                                           const TempGroup* primary) {
  if (!CanSwitchUsers(why)) return nullptr;
  auto u = std::unique_ptr<TempUser>(new TempUser());
  u->name_ = RandomName();
  std::vector<std::string> argv{"/usr/sbin/useradd", "--no-create-home", "--shell",
                                "/usr/sbin/nologin"};
  if (primary != nullptr) {
    argv.insert(argv.end(), {"--gid", primary->name()});
  } else {
    argv.push_back("--user-group");
    u->own_group_ = true;
  }
  const std::string groups = JoinGids(supplementary);
  if (!groups.empty()) argv.insert(argv.end(), {"--groups", groups});
  argv.push_back(u->name_);
  if (!RunAdmin(argv, why)) return nullptr;
  const passwd* pw = ::getpwnam(u->name_.c_str());
  if (pw == nullptr) {
    *why = "useradd " + u->name_ + " succeeded but getpwnam cannot find it";
    return nullptr;
  }
  u->id_.uid = pw->pw_uid;
  u->id_.gid = pw->pw_gid;
  u->id_.groups = supplementary;
  u->id_.groups.push_back(pw->pw_gid);
  return u;
}

TempUser::~TempUser() {
  std::string why;
  // userdel also removes the user's own group (USERGROUPS_ENAB).
  if (!name_.empty()) (void)RunAdmin({"/usr/sbin/userdel", name_}, &why);
}

Outcome RunProgramAs(const Identity& who, const std::vector<std::string>& argv, Ms timeout,
                     const std::vector<std::string>& env) {
  return RunProgram(argv, timeout, OptionsAs(who, env));
}

ProcessAs::ProcessAs(const Identity& who, const std::vector<std::string>& argv,
                     const std::vector<std::string>& env) {
  (void)process_.Start(argv, OptionsAs(who, env));
}

ProcessAs::~ProcessAs() = default;

}  // namespace dsb::testing
