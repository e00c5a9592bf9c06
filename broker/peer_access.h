// Who may use the broker's local socket (docs/config.md, "Who can do what"):
// root, the broker's own uid, and members of broker.group, through their
// primary group or a supplementary one. Exactly the users who can open the
// socket and the segments (both 0660, owned by the broker's uid and
// broker.group): the broker never admits someone the file modes would not.
//
// On Windows (issue 12): root is LocalSystem, a uid a user SID, a group a
// group SID; the peer is the pipe's client process (GetNamedPipeClientProcessId)
// and its token's user and enabled groups. The pipe's security descriptor
// (common/local_frame_server_win.h) admits the same accounts.
//
// Thread rule: none (pure functions and one system call on a given fd).
#ifndef DSB_BROKER_PEER_ACCESS_H_
#define DSB_BROKER_PEER_ACCESS_H_

#include <optional>
#include <string>
#include <vector>

#include "broker/config/broker_config.h"
#include "common/account.h"
#include "common/local_frame.h"

namespace dsb::broker {

// A local peer as the kernel reports it (SO_PEERCRED, SO_PEERGROUPS; on
// Windows the client process's token).
struct PeerCredentials {
  ProcessId pid = 0;
  AccountId uid{};
  GroupId gid{};                 // primary group
  std::vector<GroupId> groups;   // supplementary groups (may include gid)
  bool groups_known = false;     // false: neither SO_PEERGROUPS nor /proc answered
};

// Reads the peer of connected Unix socket `fd`: SO_PEERCRED, then the
// supplementary groups through SO_PEERGROUPS (Linux >= 4.13), else the
// "Groups:" line of /proc/<pid>/status (racy against a pid reuse, hence only
// the fallback). Failure: nullopt with *why set (no credentials at all).
// Windows: `fd` is the server end of the pipe; the client's token gives the
// user, the primary group and the enabled groups (groups_known).
std::optional<PeerCredentials> ReadPeerCredentials(LocalHandle fd, std::string* why);

#ifndef _WIN32
// Parses the "Groups:" line of a /proc/<pid>/status text. nullopt: no such line.
std::optional<std::vector<gid_t>> ParseStatusGroups(const std::string& status_text);
#endif

// Whether `peer` may use a broker running as `broker_uid` with `config`.
// nullopt: allowed. Otherwise the refusal sent to the peer and logged, naming
// the uid and pid and what to do (add the user to broker.group).
std::optional<std::string> RefuseLocalPeer(const PeerCredentials& peer,
                                           const AccountId& broker_uid,
                                           const config::BrokerConfig& config);

}  // namespace dsb::broker

#endif  // DSB_BROKER_PEER_ACCESS_H_
