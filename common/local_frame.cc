#include "common/local_frame.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace dsb {
namespace {

// Reads exactly n bytes; waits at most until `deadline` for each chunk.
Status ReadExact(int fd, char* out, std::size_t n,
                 std::chrono::steady_clock::time_point deadline, bool forever) {
  std::size_t got = 0;
  while (got < n) {
    int wait_ms = -1;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {Errc::kTimeout, "broker did not answer in time"};
      wait_ms = static_cast<int>(std::min<long long>(left.count(), 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, wait_ms);
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) return {Errc::kTimeout, "broker did not answer in time"};
    const ssize_t r = ::recv(fd, out + got, n - got, 0);
    if (r == 0) return {Errc::kBrokerUnavailable, "broker closed the connection"};
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return {Errc::kBrokerUnavailable, std::string("reading from broker: ") + std::strerror(errno)};
    }
    got += static_cast<std::size_t>(r);
  }
  return Status::Ok();
}

// Milliseconds left until `deadline` for poll(), at least 0.
int PollMs(Deadline deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<long long>(left.count(), 0, 1 << 30));
}

// The uid of user `name`, if there is one.
std::optional<uid_t> LookupUser(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return std::nullopt;
  }
  return found->pw_uid;
}

}  // namespace

std::string DescribeUid(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  std::string out = "uid " + std::to_string(uid);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
      found->pw_name != nullptr) {
    out += std::string(" (") + found->pw_name + ")";
  }
  return out;
}

Result<PeerCredentials> GetPeerCredentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    return Status{Errc::kInternal,
                  std::string("cannot read the broker's credentials (SO_PEERCRED): ") +
                      std::strerror(errno)};
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

#ifndef DSB_DEFAULT_BROKER_USER
#error "DSB_DEFAULT_BROKER_USER is set by common/CMakeLists.txt (the cache variable of that name)"
#endif
const char* const kDefaultBrokerUser = DSB_DEFAULT_BROKER_USER;

Result<BrokerTrust> ResolveBrokerTrust(std::string_view spec, std::string_view spec_source,
                                       std::string how_to_trust) {
  return ResolveBrokerTrust(spec, spec_source, std::move(how_to_trust), kDefaultBrokerUser);
}

Result<BrokerTrust> ResolveBrokerTrust(std::string_view spec, std::string_view spec_source,
                                       std::string how_to_trust, std::string_view default_user) {
  BrokerTrust trust;
  trust.how_to_trust = std::move(how_to_trust);
  // By name only (a uid would always "exist"): present only where root made it.
  if (!default_user.empty()) trust.default_uid = LookupUser(std::string(default_user));
  std::string value(spec);
  std::string source = std::string(spec_source) + " '" + value + "'";
  if (value.empty()) {
    const char* env = std::getenv(kBrokerUserEnv);
    if (env == nullptr || *env == '\0') return trust;
    value = env;
    source = std::string(kBrokerUserEnv) + "='" + value + "'";
  }
  // A user name first (names may be all digits); then a decimal uid.
  if (auto uid = LookupUser(value)) {
    trust.broker_uid = *uid;
  } else if (value.size() <= 10 &&
             std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const unsigned long long n = std::strtoull(value.c_str(), nullptr, 10);
    if (n >= static_cast<unsigned long long>(static_cast<uid_t>(-1))) {
      return Status{Errc::kInvalidArgument, source + " is not a valid uid"};
    }
    trust.broker_uid = static_cast<uid_t>(n);
  } else {
    return Status{Errc::kInvalidArgument,
                  source + " names no user of this machine (give a user name or a decimal uid)"};
  }
  trust.source = std::move(source);
  return trust;
}

Status CheckBrokerPeer(const PeerCredentials& peer, const std::string& path,
                       const BrokerTrust& trust) {
  const uid_t self = ::geteuid();
  if (peer.uid == 0 || peer.uid == self || (trust.broker_uid && peer.uid == *trust.broker_uid) ||
      (trust.default_uid && peer.uid == *trust.default_uid)) {
    return Status::Ok();
  }
  // "root", "root or this process's uid 1000 (alice)", "root, this
  // process's ... or the broker user ...", then "(no broker user is named)".
  std::vector<std::string> who{"root"};
  if (self != 0) who.push_back("this process's " + DescribeUid(self));
  if (trust.broker_uid) {
    who.push_back("the broker user " + DescribeUid(*trust.broker_uid) + " named by " +
                  trust.source);
  }
  std::string trusted;
  for (std::size_t i = 0; i < who.size(); ++i) {
    trusted += (i == 0 ? "" : i + 1 == who.size() ? " or " : ", ") + who[i];
  }
  if (trust.default_uid) {
    trusted += " or the default broker user " + DescribeUid(*trust.default_uid);
  }
  if (!trust.broker_uid) trusted += " (no broker user is named)";
  return Status{Errc::kPermissionDenied,
                "refusing the broker at socket " + path + ": the process listening there (pid " +
                    std::to_string(peer.pid) + ") runs as " + DescribeUid(peer.uid) +
                    ", not as " + trusted +
                    "; nothing was sent to it. Whoever can write the socket's folder can put "
                    "another program there; if this really is your broker, " +
                    trust.how_to_trust};
}

Result<int> ConnectLocal(const std::string& path, Deadline deadline) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status{Errc::kInvalidArgument, "socket path '" + path + "' is empty or longer than " +
                                              std::to_string(sizeof(addr.sun_path) - 1) +
                                              " bytes"};
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  // Non-blocking: a blocking connect() to a listener whose backlog is full
  // (a broker that is stopped or does not accept) waits without bound. Linux
  // answers EAGAIN at once instead; retry with a short backoff until the
  // deadline.
  auto backoff = std::chrono::milliseconds(1);
  for (;;) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Status{Errc::kInternal, std::string("socket(): ") + std::strerror(errno)};
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && err == EINPROGRESS) {
      // Not what Linux does for AF_UNIX, but portable: wait for writability.
      pollfd p{fd, POLLOUT, 0};
      const int pr = ::poll(&p, 1, PollMs(deadline));
      socklen_t len = sizeof err;
      if (pr > 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0) {
        rc = err == 0 ? 0 : -1;
      } else {
        err = EAGAIN;
      }
    }
    if (rc == 0) {
      const int flags = ::fcntl(fd, F_GETFL);
      if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        const int e = errno;
        ::close(fd);
        return Status{Errc::kInternal, std::string("fcntl(): ") + std::strerror(e)};
      }
      return fd;
    }
    ::close(fd);
    if (err != EAGAIN && err != EINTR) {
      std::string hint = err == ENOENT || err == ECONNREFUSED ? " (is dsb-broker running?)" : "";
      return Status{Errc::kBrokerUnavailable,
                    "cannot connect to broker socket " + path + ": " + std::strerror(err) + hint};
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return Status{Errc::kTimeout, "broker socket " + path +
                                        " accepted no connection in time (its backlog is full: "
                                        "the broker is stopped, overloaded or not a broker)"};
    }
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

Result<BrokerConnection> ConnectBroker(const std::string& path, const BrokerTrust& trust,
                                       Deadline deadline) {
  auto fd = ConnectLocal(path, deadline);
  if (!fd.ok()) return fd.status();
  auto peer = GetPeerCredentials(*fd);
  if (!peer.ok()) {
    ::close(*fd);
    return Status{peer.status().code(), "broker socket " + path + ": " + peer.status().message()};
  }
  if (Status s = CheckBrokerPeer(*peer, path, trust); !s.ok()) {
    ::close(*fd);
    return s;
  }
  return BrokerConnection{*fd, *peer};
}

Result<int> ConnectLocal(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status{Errc::kInvalidArgument, "socket path '" + path + "' is empty or longer than " +
                                              std::to_string(sizeof(addr.sun_path) - 1) +
                                              " bytes"};
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status{Errc::kInternal, std::string("socket(): ") + std::strerror(errno)};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd);
    std::string hint = err == ENOENT || err == ECONNREFUSED ? " (is dsb-broker running?)" : "";
    return Status{Errc::kBrokerUnavailable,
                  "cannot connect to broker socket " + path + ": " + std::strerror(err) + hint};
  }
  return fd;
}

std::string FrameHeader(std::size_t length) {
  std::string h(4, '\0');
  h[0] = static_cast<char>((length >> 24) & 0xFF);
  h[1] = static_cast<char>((length >> 16) & 0xFF);
  h[2] = static_cast<char>((length >> 8) & 0xFF);
  h[3] = static_cast<char>(length & 0xFF);
  return h;
}

Status WriteFrame(int fd, std::string_view payload) {
  // Blocks until the broker takes the request (no deadline).
  return WriteFrame(fd, payload, Deadline::max());
}

Result<std::string> EncodeFrame(std::string_view payload) {
  if (payload.size() > kMaxLocalFrame) {
    return Status{Errc::kProtocol, "message of " + std::to_string(payload.size()) +
                                       " bytes exceeds the " + std::to_string(kMaxLocalFrame) +
                                       "-byte limit"};
  }
  std::string buf = FrameHeader(payload.size());
  buf.append(payload);
  return buf;
}

Status WriteFrame(int fd, std::string_view payload, Deadline deadline, bool* partial) {
  if (partial != nullptr) *partial = false;
  Result<std::string> frame = EncodeFrame(payload);
  if (!frame.ok()) return frame.status();
  const std::string& buf = *frame;
  std::size_t sent = 0;
  while (sent < buf.size()) {
    const ssize_t w = ::send(fd, buf.data() + sent, buf.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
      sent += static_cast<std::size_t>(w);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return {Errc::kBrokerUnavailable, std::string("writing to broker: ") + std::strerror(errno)};
    }
    // The socket is full: the broker is not reading. Wait for room, boundedly.
    pollfd p{fd, POLLOUT, 0};
    const int pr = ::poll(&p, 1, PollMs(deadline));
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) {
      if (partial != nullptr) *partial = sent > 0;
      return {Errc::kTimeout, "the broker took no request in time (it does not read its socket)"};
    }
  }
  return Status::Ok();
}

Result<std::string> ReadFrame(int fd, Deadline deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return ReadFrame(fd, std::max(left, std::chrono::milliseconds(0)));
}

Result<std::string> ReadFrame(int fd, std::chrono::milliseconds timeout) {
  const bool forever = timeout.count() < 0;
  const auto deadline = std::chrono::steady_clock::now() + (forever ? std::chrono::milliseconds(0)
                                                                    : timeout);
  unsigned char h[kFrameHeaderBytes];
  if (Status s = ReadExact(fd, reinterpret_cast<char*>(h), sizeof h, deadline, forever); !s.ok()) {
    return s;
  }
  const std::size_t len = DecodeFrameLength(h);
  if (len > kMaxLocalFrame) {
    return Status{Errc::kProtocol, "peer announced a " + std::to_string(len) +
                                       "-byte message; the limit is " +
                                       std::to_string(kMaxLocalFrame)};
  }
  std::string out(len, '\0');
  if (Status s = ReadExact(fd, out.data(), len, deadline, forever); !s.ok()) return s;
  return out;
}

}  // namespace dsb
