// The server half of the local transport on Windows (issue 12): the broker's
// named pipe, \\.\pipe\dsb-<id>, accepted on Asio. The role of the Unix
// socket's acceptor (asio::local::stream_protocol::acceptor) on POSIX; each
// accepted connection is an asio::windows::stream_handle, which
// asio::async_read/async_write use exactly like a socket, so the code that
// serves requests does not know which transport it runs on.
//
//  - Open() makes the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE: if
//    the name exists (another broker, or a program squatting it) it fails,
//    which is the "is another broker already listening" check. Wine 8 ignores
//    that flag, so Open() first asks WaitNamedPipeW whether the name has
//    instances (the same answer, with a race the flag closes on Windows).
//  - Every instance: byte mode, overlapped, PIPE_REJECT_REMOTE_CLIENTS, and
//    the security descriptor of PipeSecurityDescriptor below.
//  - A next instance is made before a connected one is handed out, so a
//    connecting client finds a free instance whenever the broker accepts;
//    a spent instance (its client left before the accept) is closed only
//    after its successor exists: the name never lacks an instance of ours.
//  - Every instance made is checked to have the broker's account as owner:
//    one that joined a pipe another account made (a squatter) is closed and
//    the accept fails with the "dsb.pipe" error naming the situation
//    (squatter() names the owner); the broker backs off and logs it.
//
// What a real Windows host enforces and Wine 8 does not: Wine stores the
// descriptor but does not check a client's CreateFileW against it (any
// local process may connect under Wine), nor FILE_FLAG_FIRST_PIPE_INSTANCE;
// Wine has no remote pipes, so PIPE_REJECT_REMOTE_CLIENTS is untested here
// (docs/windows.md).
//
// Thread rule: all calls and handlers on the executor given to the
// constructor (the broker's single-threaded io_context).
#ifndef DSB_COMMON_LOCAL_FRAME_SERVER_WIN_H_
#define DSB_COMMON_LOCAL_FRAME_SERVER_WIN_H_

#ifndef _WIN32
#error "common/local_frame_server_win.h is for Windows builds only"
#endif

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/windows/overlapped_ptr.hpp>
#include <boost/asio/windows/stream_handle.hpp>
#include <optional>
#include <string>
#include <utility>

#include "common/account.h"
#include "common/status.h"

namespace dsb {

// The pipe's security descriptor in SDDL: full access for LocalSystem,
// Administrators and `broker` (the broker's own account, which makes the
// instances); read and write data only (no FILE_CREATE_PIPE_INSTANCE, so no
// client can serve the next client) for `group` if given. Nobody else.
// Protected (P): nothing inherited. The owner (O:) is `broker` if given,
// so that a client reading the owner sees the broker's account.
std::string PipeSecurityDescriptor(const AccountId& broker, const std::optional<GroupId>& group);

class LocalPipeAcceptor {
 public:
  using Stream = boost::asio::windows::stream_handle;

  explicit LocalPipeAcceptor(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}
  ~LocalPipeAcceptor();
  LocalPipeAcceptor(const LocalPipeAcceptor&) = delete;
  LocalPipeAcceptor& operator=(const LocalPipeAcceptor&) = delete;

  // Creates the pipe `name` (\\.\pipe\<something>) with the first instance,
  // admitting `group` besides LocalSystem, Administrators and this process's
  // account. kInvalidArgument for a name not of that form; kBrokerUnavailable
  // "another broker is already listening on <name>" if an instance of that
  // name exists already (FILE_FLAG_FIRST_PIPE_INSTANCE refused), or naming
  // the system's error. REQUIRES: !is_open().
  Status Open(const std::string& name, const std::optional<GroupId>& group);

  bool is_open() const { return open_; }
  // The owner of the last instance refused as a squatter's ("" if none).
  const std::string& squatter() const { return squatter_; }
  const std::string& name() const { return name_; }

  // Stops accepting: a pending async_accept completes with
  // operation_aborted; connections handed out stay open. Idempotent.
  void close(boost::system::error_code& ec);

  // Waits for a client on the free instance; `handler(ec, stream)` runs on
  // the executor: no error and the connected stream, or the error (then
  // `stream` is not open). operation_aborted after close(). A system error
  // (the next instance could not be made, ...) is the caller's to back off
  // from. At most one async_accept at a time.
  template <class Handler>
  void async_accept(Handler handler) {
    if (!open_) {
      boost::asio::post(ex_, [ex = ex_, h = std::move(handler)]() mutable {
        h(boost::asio::error::operation_aborted, Stream(ex));
      });
      return;
    }
    if (!pending_) {
      if (boost::system::error_code ec = MakeInstance(false)) {
        boost::asio::post(ex_,
                          [ex = ex_, ec, h = std::move(handler)]() mutable { h(ec, Stream(ex)); });
        return;
      }
    }
    boost::asio::windows::overlapped_ptr op(
        ex_, [this, h = std::move(handler)](boost::system::error_code ec, std::size_t) mutable {
          if (ec || !pending_) {
            h(ec ? ec : boost::asio::error::operation_aborted, Stream(ex_));
            return;
          }
          Stream connected = std::move(*pending_);
          pending_.reset();
          // The next instance before this one is handed out; if it cannot
          // be made, the next async_accept retries and reports the error.
          if (open_) (void)MakeInstance(false);
          h(boost::system::error_code(), std::move(connected));
        });
    StartConnect(op);
  }

 private:
  // Makes the free instance (pending_), then closes the one it replaces.
  // `first`: FILE_FLAG_FIRST_PIPE_INSTANCE. An instance not owned by this
  // process's account is closed: the "dsb.pipe" error, pending_ unchanged.
  boost::system::error_code MakeInstance(bool first);
  // ConnectNamedPipe on pending_ with `op`: released if the completion will
  // come through the I/O completion port, completed at once otherwise
  // (a client that connected already, or an error).
  void StartConnect(boost::asio::windows::overlapped_ptr& op);

  boost::asio::any_io_executor ex_;
  std::string name_;
  std::wstring wide_name_;
  void* security_ = nullptr;  // PSECURITY_DESCRIPTOR, LocalFree'd
  std::optional<Stream> pending_;
  std::string squatter_;
  bool open_ = false;
};

}  // namespace dsb

#endif  // DSB_COMMON_LOCAL_FRAME_SERVER_WIN_H_
