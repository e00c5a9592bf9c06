// A local peer on Windows: the pipe's client process and its token
// (contracts in broker/peer_access.h).
#include <windows.h>

#include "broker/peer_access.h"
#include "common/account_win.h"

namespace dsb::broker {

std::optional<PeerCredentials> ReadPeerCredentials(LocalHandle fd, std::string* why) {
  ULONG pid = 0;
  if (!::GetNamedPipeClientProcessId(fd, &pid)) {
    *why = "cannot read the peer's process (GetNamedPipeClientProcessId): " +
           win::ErrorText(::GetLastError());
    return std::nullopt;
  }
  // As a service the broker runs as LocalSystem, which may read any
  // process's token. A broker under a plain account reads only its own
  // user's processes (a token admits SYSTEM and its user): anyone else is
  // refused with the reason. Not checked under Wine (one user there);
  // ImpersonateNamedPipeClient after the first request would lift that.
  auto id = win::ProcessIdentityOf(static_cast<ProcessId>(pid));
  if (!id.ok()) {
    *why = "cannot read the peer's account: " + id.status().message();
    return std::nullopt;
  }
  PeerCredentials peer;
  peer.pid = static_cast<ProcessId>(pid);
  peer.uid = std::move(id->user);
  peer.gid = std::move(id->primary_group);
  peer.groups = std::move(id->groups);
  peer.groups_known = true;
  return peer;
}

}  // namespace dsb::broker
