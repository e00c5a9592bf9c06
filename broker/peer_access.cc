// Who may use the broker's local transport: the rule, the same on every
// platform (contracts in broker/peer_access.h; reading a peer's credentials:
// peer_access_posix.cc, peer_access_win.cc).
#include "broker/peer_access.h"

#include <algorithm>

namespace dsb::broker {

std::optional<std::string> RefuseLocalPeer(const PeerCredentials& peer,
                                           const AccountId& broker_uid,
                                           const config::BrokerConfig& config) {
  if (IsSuperuser(peer.uid) || peer.uid == broker_uid) return std::nullopt;
  if (config.group) {
    const GroupId& gid = config.group->gid;
    if (peer.gid == gid || std::find(peer.groups.begin(), peer.groups.end(), gid) !=
                               peer.groups.end()) {
      return std::nullopt;
    }
  }
  std::string why = "uid " + AccountText(peer.uid) + " (pid " + std::to_string(peer.pid) +
                    ") may not use this broker: only " + kSuperuserName + ", the broker's uid (" +
                    AccountText(broker_uid) + ")";
  if (config.group) {
    why += " and members of group '" + config.group->name + "' (gid " +
           AccountText(config.group->gid) + ", primary or supplementary) may; add the user "
           "to that group" + (peer.groups_known ? std::string()
                                                 : " (the peer's supplementary groups could not "
                                                   "be read)");
  } else {
    why += " may (no broker.group is configured); set broker.group and add the user to it";
  }
  return why;
}

}  // namespace dsb::broker
