// Who may change what the broker shares (issue 11): the write ops of the local
// socket (set_limit, confirm_stopped, revoke, drain, undrain) are for root, the
// broker's own user and members of broker.admin_group; every peer the socket
// admits (peer_access.h) may read (status, clients, leases).
//
// The peer's groups come from the socket (SO_PEERGROUPS: the groups it had when
// it connected, no pid race; /proc/<pid>/status only on a kernel before 4.13),
// not from getgrouplist of its account: a process that dropped a group (or
// never logged in again after `usermod -aG`) is judged by the groups it really
// has, exactly as the file modes judge it. A peer whose groups are unknown is
// judged by its primary group alone (refused unless that is admin_group).
//
// Thread rule: none (pure functions, plus one getpwuid_r in DescribePeer).
#ifndef DSB_BROKER_ADMIN_RIGHTS_H_
#define DSB_BROKER_ADMIN_RIGHTS_H_

#include <optional>
#include <string>
#include <string_view>

#include "broker/config/broker_config.h"
#include "broker/peer_access.h"
#include "common/account.h"

namespace dsb::broker {

// Why a peer may change things (for the log line of the change).
enum class AdminReason { kRoot, kBrokerUser, kAdminGroup };

// Whether `peer` may run write op `op` on a broker running as `broker_uid`
// with admin group `admin_group` (broker.admin_group; none: root and the
// broker's user only). `peer_name` names the peer in messages
// (DescribePeer's text).
// Success: the reason it may. Failure: the refusal text for the peer, naming
// the op, the peer and how to get the right ("join admin group 'X'").
Result<AdminReason> CheckAdminRight(std::string_view op, const PeerCredentials& peer,
                                    std::string_view peer_name, const AccountId& broker_uid,
                                    const std::optional<config::GroupRef>& admin_group);

// "uid 1001 (alice), pid 4242": the user name from the account database
// ("uid 1001 (no account), pid 4242" if none).
std::string DescribePeer(const AccountId& uid, ProcessId pid);

// The user name of `uid`, or "" if it has no account (AccountName).
std::string UserName(const AccountId& uid);

}  // namespace dsb::broker

#endif  // DSB_BROKER_ADMIN_RIGHTS_H_
