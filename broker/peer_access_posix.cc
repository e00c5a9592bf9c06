// A local peer on POSIX: SO_PEERCRED and the supplementary groups (contracts
// in broker/peer_access.h).
#include "broker/peer_access.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace dsb::broker {

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59  // Linux >= 4.13; older headers lack the name
#endif

std::optional<std::vector<gid_t>> ParseStatusGroups(const std::string& status_text) {
  std::istringstream in(status_text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream fields(line.substr(7));
    std::vector<gid_t> groups;
    unsigned long long g = 0;
    while (fields >> g) groups.push_back(static_cast<gid_t>(g));
    return groups;
  }
  return std::nullopt;
}

namespace {

// SO_PEERGROUPS: the groups the peer had when it connected (no pid race).
std::optional<std::vector<gid_t>> PeerGroupsFromSocket(int fd) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE) return std::nullopt;  // ENOPROTOOPT: a kernel before 4.13
    // ERANGE: len now holds the size needed (NGROUPS_MAX is 65536).
    groups.resize(std::max<std::size_t>(len / sizeof(gid_t), groups.size() * 2));
  }
  return std::nullopt;
}

std::optional<std::vector<gid_t>> PeerGroupsFromProc(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  if (!f) return std::nullopt;
  std::ostringstream text;
  text << f.rdbuf();
  return ParseStatusGroups(text.str());
}

}  // namespace

std::optional<PeerCredentials> ReadPeerCredentials(LocalHandle fd, std::string* why) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *why = std::string("cannot read the peer's credentials (SO_PEERCRED): ") +
           std::strerror(errno);
    return std::nullopt;
  }
  PeerCredentials peer;
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  std::optional<std::vector<gid_t>> groups = PeerGroupsFromSocket(fd);
  if (!groups) groups = PeerGroupsFromProc(cred.pid);
  if (groups) {
    peer.groups = std::move(*groups);
    peer.groups_known = true;
  }
  return peer;
}

}  // namespace dsb::broker
