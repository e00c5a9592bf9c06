// Framing and the broker-trust rule of the local transport, the same on every
// platform (contracts in common/local_frame.h); what moves the bytes is in
// local_frame_posix.cc / local_frame_win.cc.
#include "common/local_frame.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "common/local_frame_io.h"

namespace dsb {
namespace {

// How an account is named besides its user name, in messages.
#ifdef _WIN32
constexpr const char* kAccountNumberHint = "name or a SID such as S-1-5-21-...";
#else
constexpr const char* kAccountNumberHint = "name or a decimal uid";
#endif

}  // namespace

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
  if (!default_user.empty()) trust.default_uid = LookupAccount(std::string(default_user));
  std::string value(spec);
  std::string source = std::string(spec_source) + " '" + value + "'";
  if (value.empty()) {
    const char* env = std::getenv(kBrokerUserEnv);
    if (env == nullptr || *env == '\0') return trust;
    value = env;
    source = std::string(kBrokerUserEnv) + "='" + value + "'";
  }
  // A user name first (names may be all digits); then a decimal uid (on
  // Windows a SID string).
  if (auto uid = LookupAccount(value)) {
    trust.broker_uid = *uid;
  } else if (auto number = ParseAccountNumber(value)) {
    trust.broker_uid = *number;
  } else if (value.size() <= 10 &&
             std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Status{Errc::kInvalidArgument, source + " is not a valid uid"};
  } else {
    return Status{Errc::kInvalidArgument, source + " names no user of this machine (give a user " +
                                              kAccountNumberHint + ")"};
  }
  trust.source = std::move(source);
  return trust;
}

Status CheckBrokerPeer(const PeerCredentials& peer, const std::string& path,
                       const BrokerTrust& trust) {
  const AccountId self = CurrentAccount();
  if (IsSuperuser(peer.uid) || peer.uid == self ||
      (trust.broker_uid && peer.uid == *trust.broker_uid) ||
      (trust.default_uid && peer.uid == *trust.default_uid)) {
    return Status::Ok();
  }
  // "root", "root or this process's uid 1000 (alice)", "root, this
  // process's ... or the broker user ...", then "(no broker user is named)".
  std::vector<std::string> who{kSuperuserName};
  if (!IsSuperuser(self)) who.push_back("this process's " + DescribeUid(self));
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
                    std::to_string(peer.pid) + ") runs as " + DescribeUid(peer.uid) + ", not as " +
                    trusted +
                    "; nothing was sent to it. Whoever can write the socket's folder can put "
                    "another program there; if this really is your broker, " +
                    trust.how_to_trust};
}

Result<BrokerConnection> ConnectBroker(const std::string& path, const BrokerTrust& trust,
                                       Deadline deadline) {
  auto fd = ConnectLocal(path, deadline);
  if (!fd.ok()) return fd.status();
  auto peer = GetPeerCredentials(*fd);
  if (!peer.ok()) {
    CloseLocal(*fd);
    return Status{peer.status().code(), "broker socket " + path + ": " + peer.status().message()};
  }
  if (Status s = CheckBrokerPeer(*peer, path, trust); !s.ok()) {
    CloseLocal(*fd);
    return s;
  }
  return BrokerConnection{*fd, *peer};
}

std::string FrameHeader(std::size_t length) {
  std::string h(4, '\0');
  h[0] = static_cast<char>((length >> 24) & 0xFF);
  h[1] = static_cast<char>((length >> 16) & 0xFF);
  h[2] = static_cast<char>((length >> 8) & 0xFF);
  h[3] = static_cast<char>(length & 0xFF);
  return h;
}

Status WriteFrame(LocalHandle fd, std::string_view payload) {
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

Status WriteFrame(LocalHandle fd, std::string_view payload, Deadline deadline, bool* partial) {
  if (partial != nullptr) *partial = false;
  Result<std::string> frame = EncodeFrame(payload);
  if (!frame.ok()) return frame.status();
  std::size_t sent = 0;
  Status s = detail::WriteAll(fd, *frame, deadline, &sent);
  if (s.code() == Errc::kTimeout && partial != nullptr) *partial = sent > 0;
  return s;
}

Result<std::string> ReadFrame(LocalHandle fd, Deadline deadline) {
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return ReadFrame(fd, std::max(left, std::chrono::milliseconds(0)));
}

Result<std::string> ReadFrame(LocalHandle fd, std::chrono::milliseconds timeout) {
  const bool forever = timeout.count() < 0;
  const auto deadline =
      std::chrono::steady_clock::now() + (forever ? std::chrono::milliseconds(0) : timeout);
  unsigned char h[kFrameHeaderBytes];
  if (Status s = detail::ReadExact(fd, reinterpret_cast<char*>(h), sizeof h, deadline, forever);
      !s.ok()) {
    return s;
  }
  const std::size_t len = DecodeFrameLength(h);
  if (len > kMaxLocalFrame) {
    return Status{Errc::kProtocol, "peer announced a " + std::to_string(len) +
                                       "-byte message; the limit is " +
                                       std::to_string(kMaxLocalFrame)};
  }
  std::string out(len, '\0');
  if (Status s = detail::ReadExact(fd, out.data(), len, deadline, forever); !s.ok()) return s;
  return out;
}

}  // namespace dsb
