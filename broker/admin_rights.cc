#include "broker/admin_rights.h"

#include <algorithm>

#include "common/escape.h"

namespace dsb::broker {

Result<AdminReason> CheckAdminRight(std::string_view op, const PeerCredentials& peer,
                                    std::string_view peer_name, const AccountId& broker_uid,
                                    const std::optional<config::GroupRef>& admin_group) {
  if (IsSuperuser(peer.uid)) return AdminReason::kRoot;
  if (peer.uid == broker_uid) return AdminReason::kBrokerUser;
  if (admin_group) {
    const GroupId& gid = admin_group->gid;
    // Supplementary groups count only if the kernel reported them.
    if (peer.gid == gid ||
        (peer.groups_known &&
         std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end())) {
      return AdminReason::kAdminGroup;
    }
  }
  std::string why = std::string(op) + " changes what every client may use: " +
                    std::string(peer_name) + " may read (status, clients, leases) but not " +
                    "change it; only " + kSuperuserName + ", the broker's user (uid " +
                    AccountText(broker_uid) + ")";
  if (admin_group) {
    why += " and members of admin group '" + admin_group->name + "' (gid " +
           AccountText(admin_group->gid) + ", broker.admin_group) may: join admin group '" +
           admin_group->name + "' (usermod -aG " + admin_group->name +
           " <user>, then log in again)";
    if (!peer.groups_known) {
      why += "; the peer's supplementary groups could not be read, so only its primary "
             "group counted";
    }
  } else {
    why += " may (no broker.admin_group is configured): set broker.admin_group and join that "
           "group";
  }
  return Status(Errc::kPermissionDenied, std::move(why));
}

std::string UserName(const AccountId& uid) { return AccountName(uid); }

std::string DescribePeer(const AccountId& uid, ProcessId pid) {
  const std::string name = UserName(uid);
  // Escaped: an account name is the account database's text, not ours.
  return "uid " + AccountText(uid) + " (" + (name.empty() ? "no account" : EscapeText(name, 64)) +
         "), pid " +
         std::to_string(pid);
}

}  // namespace dsb::broker
