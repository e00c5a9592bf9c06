// The local socket: BindSocket() refuses a socket another broker answers on,
// replaces a stale one and binds (mode 0660, the configured group);
// StartAccept() starts its accept loop (LocalServer, local_server.cc).
// Windows: the named pipe config.socket (\\.\pipe\dsb-<id>), refused if it
// has instances already, its security descriptor admitting the configured
// group (LocalPipeAcceptor::Open); no file to replace or give away.
#include "broker/broker_impl.h"

#ifndef _WIN32
#include <fcntl.h>
#endif

#include <cstring>

namespace dsb::broker {

#ifdef _WIN32
Status Broker::Impl::BindSocket() {
  std::optional<GroupId> group;
  if (config.group) group = config.group->gid;
  return acceptor.Open(config.socket.string(), group);
}
#else
Status Broker::Impl::BindSocket() {
  namespace fs = std::filesystem;
  const fs::path path = config.socket;
  std::error_code fec;
  // The folder is private (Open): nobody else can swap what is at `path`.
  if (fs::exists(path, fec)) {
    // A socket file exists: refuse if a broker answers on it, else it is stale.
    if (auto fd = ConnectLocal(path.string()); fd.ok()) {
      ::close(*fd);
      return {Errc::kBrokerUnavailable,
              "another broker is already listening on " + path.string()};
    }
    fs::remove(path, fec);
  }
  boost::system::error_code ec;
  acceptor.open(local_stream(), ec);
  if (!ec) {
    // Made 0660 by bind itself (no chmod by name afterwards). The umask is
    // the process's: Open runs before any thread of the broker starts.
    const mode_t old_mask = ::umask(0117);
    acceptor.bind(local_stream::endpoint(path.string()), ec);
    ::umask(old_mask);
  }
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return {Errc::kBrokerUnavailable, "cannot listen on " + path.string() + ": " + ec.message()};
  }
  // AT_SYMLINK_NOFOLLOW: never changes what a link points to.
  if (config.group && ::fchownat(AT_FDCWD, path.c_str(), static_cast<uid_t>(-1),
                                 config.group->gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return {Errc::kBrokerUnavailable, "cannot give socket " + path.string() + " to group " +
                                          config.group->name + ": " + std::strerror(errno)};
  }
  return Status::Ok();
}
#endif

void Broker::Impl::StartAccept() {
  if (!local) local = std::make_unique<LocalServer>(*this);
  local->Start();
}

}  // namespace dsb::broker
