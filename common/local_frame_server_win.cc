// The broker's named pipe on Asio (contracts in common/local_frame_server_win.h).
#include "common/local_frame_server_win.h"

#include <windows.h>
// After windows.h:
#include <sddl.h>

#include "common/account_win.h"
#include "common/local_frame.h"

namespace dsb {

namespace {

// FILE_GENERIC_READ | FILE_WRITE_DATA: what a client's CreateFileW asks for
// (local_frame_win.cc), and nothing that makes pipe instances.
constexpr unsigned long kClientAccess = 0x0012008B;

boost::system::error_code SystemError(DWORD e) {
  return {static_cast<int>(e), boost::asio::error::get_system_category()};
}

// The error of an instance whose pipe another account made (a squatter).
class SquatterCategory : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "dsb.pipe"; }
  std::string message(int) const override {
    return "the broker's pipe name is held by a pipe another account made (a program "
           "squats it); no connection is accepted on it: stop that program and restart the "
           "broker";
  }
};

const boost::system::error_category& Squatter() {
  static const SquatterCategory category;
  return category;
}

}  // namespace

std::string PipeSecurityDescriptor(const AccountId& broker, const std::optional<GroupId>& group) {
  // The owner explicitly: a LocalSystem service's default owner is usually
  // BUILTIN\Administrators, and a client that cannot read the service's
  // token trusts the pipe by its owner (local_frame_win.cc), which must then
  // be the broker's own account.
  std::string sddl = broker.empty() ? std::string() : "O:" + broker;
  sddl += "D:P(A;;GA;;;SY)(A;;GA;;;BA)";
  if (!broker.empty()) sddl += "(A;;GA;;;" + broker + ")";
  if (group && !group->empty()) {
    char access[16];
    std::snprintf(access, sizeof access, "0x%08lX", kClientAccess);
    sddl += "(A;;" + std::string(access) + ";;;" + *group + ")";
  }
  return sddl;
}

LocalPipeAcceptor::~LocalPipeAcceptor() {
  boost::system::error_code ec;
  close(ec);
  if (security_ != nullptr) ::LocalFree(security_);
}

Status LocalPipeAcceptor::Open(const std::string& name, const std::optional<GroupId>& group) {
  DSB_CHECK(!open_, "LocalPipeAcceptor::Open called twice");
  if (!win::IsPipeName(name)) {
    return {Errc::kInvalidArgument,
            "pipe name '" + name + "' is not of the form \\\\.\\pipe\\<name> (a name without '\\' or '/')"};
  }
  const std::string sddl = PipeSecurityDescriptor(CurrentAccount(), group);
  PSECURITY_DESCRIPTOR sd = nullptr;
  if (!::ConvertStringSecurityDescriptorToSecurityDescriptorW(win::Widen(sddl).c_str(),
                                                              SDDL_REVISION_1, &sd, nullptr)) {
    return {Errc::kInvalidArgument, "cannot make the security descriptor " + sddl + " of pipe " +
                                        name + ": " + win::ErrorText(::GetLastError())};
  }
  if (security_ != nullptr) ::LocalFree(security_);
  security_ = sd;
  name_ = name;
  wide_name_ = win::Widen(name);
  // Wine 8 ignores FILE_FLAG_FIRST_PIPE_INSTANCE: ask first whether the name
  // has instances (a wait that connects nothing; "not found" = free). On
  // Windows the flag below also closes the race between the two calls.
  if (::WaitNamedPipeW(wide_name_.c_str(), 1) || ::GetLastError() != ERROR_FILE_NOT_FOUND) {
    return {Errc::kBrokerUnavailable,
            "another broker is already listening on " + name + " (the pipe has instances)"};
  }
  if (boost::system::error_code ec = MakeInstance(true)) {
    if (ec.category() == Squatter()) {
      return {Errc::kBrokerUnavailable, "cannot listen on " + name + ": the pipe's instance is "
                                        "owned by " + squatter_ + ", not by this broker (" +
                                        DescribeAccount(CurrentAccount()) +
                                        "): another program holds the name"};
    }
    if (ec.value() == ERROR_ACCESS_DENIED || ec.value() == ERROR_PIPE_BUSY) {
      return {Errc::kBrokerUnavailable,
              "another broker is already listening on " + name +
                  " (an instance of the pipe exists: FILE_FLAG_FIRST_PIPE_INSTANCE refused)"};
    }
    return {Errc::kBrokerUnavailable,
            "cannot listen on " + name + ": " + win::ErrorText(static_cast<DWORD>(ec.value()))};
  }
  open_ = true;
  return Status::Ok();
}

void LocalPipeAcceptor::close(boost::system::error_code& ec) {
  ec.clear();
  open_ = false;
  // Closing the free instance aborts its pending ConnectNamedPipe.
  if (pending_) pending_->close(ec);
}

boost::system::error_code LocalPipeAcceptor::MakeInstance(bool first) {
  SECURITY_ATTRIBUTES sa{};
  sa.nLength = sizeof sa;
  sa.lpSecurityDescriptor = security_;
  sa.bInheritHandle = FALSE;
  DWORD open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
  if (first) open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
  // Buffers the size of one whole frame each way: a reply (SendFrameNow)
  // to a fresh connection never waits.
  const auto buffer = static_cast<DWORD>(kMaxLocalFrame + kFrameHeaderBytes);
  HANDLE h = ::CreateNamedPipeW(
      wide_name_.c_str(), open_mode,
      PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
      PIPE_UNLIMITED_INSTANCES, buffer, buffer, 0, &sa);
  if (h == INVALID_HANDLE_VALUE) return SystemError(::GetLastError());
  // A later instance joins whatever pipe has the name: if another program
  // made it while the name had no instance of ours, this one would be its.
  // Ours have the broker's account as owner (PipeSecurityDescriptor).
  auto owner = win::HandleOwner(h);
  if (!owner.ok() || *owner != CurrentAccount()) {
    squatter_ = owner.ok() ? DescribeAccount(*owner) : owner.status().message();
    ::CloseHandle(h);
    return {1, Squatter()};
  }
  boost::system::error_code ec;
  // The spent instance (if any) closes only after the new one exists: the
  // name never goes without an instance of ours for a squatter to take.
  std::optional<Stream> next(std::in_place, ex_);
  next->assign(h, ec);  // onto the io_context's completion port
  if (ec) {
    ::CloseHandle(h);
    return ec;
  }
  if (pending_) {
    boost::system::error_code ignored;
    pending_->close(ignored);
  }
  pending_ = std::move(next);
  return ec;
}

void LocalPipeAcceptor::StartConnect(boost::asio::windows::overlapped_ptr& op) {
  for (;;) {
    const BOOL ok = ::ConnectNamedPipe(pending_->native_handle(), op.get());
    const DWORD e = ok ? ERROR_SUCCESS : ::GetLastError();
    if (ok || e == ERROR_IO_PENDING) {
      op.release();  // the completion port delivers the result
      return;
    }
    if (e == ERROR_PIPE_CONNECTED) {
      op.complete(boost::system::error_code(), 0);  // connected before we asked
      return;
    }
    if (e == ERROR_NO_DATA) {
      // A client connected and went away before we asked: this instance is
      // spent; make another (which closes it) and wait on that.
      if (boost::system::error_code ec = MakeInstance(false)) {
        op.complete(ec, 0);
        return;
      }
      continue;
    }
    op.complete(SystemError(e), 0);
    return;
  }
}

}  // namespace dsb
