// The broker's local transport, one name per platform (issue 12), so that
// the accept loop and the sessions (local_server.cc) and the request handling
// above them do not know which one they run on:
//  - POSIX: a Unix stream socket (the acceptor bound in listen.cc);
//  - Windows: the named pipe \\.\pipe\dsb-<id> (common/local_frame_server_win.h),
//    each connection an asio::windows::stream_handle.
// Both streams work with asio::async_read/async_write alike; a peer's end is
// a read error (EOF, or ERROR_BROKEN_PIPE) in both.
//
// Thread rule: as Broker (the single-threaded io_context).
#ifndef DSB_BROKER_LOCAL_TRANSPORT_H_
#define DSB_BROKER_LOCAL_TRANSPORT_H_

#ifdef _WIN32
#include <boost/asio/windows/stream_handle.hpp>

#include "common/local_frame_server_win.h"
#else
#include <boost/asio/local/stream_protocol.hpp>
#endif

namespace dsb::broker {

#ifdef _WIN32
using LocalAcceptor = dsb::LocalPipeAcceptor;
using LocalStream = boost::asio::windows::stream_handle;
#else
using LocalAcceptor = boost::asio::local::stream_protocol::acceptor;
using LocalStream = boost::asio::local::stream_protocol::socket;
#endif

// Ends both directions of `s` and closes it (errors ignored: the peer may be
// gone already). A pipe has no half-close: closing ends both.
inline void CloseLocalStream(LocalStream& s) {
  boost::system::error_code ec;
#ifndef _WIN32
  s.shutdown(LocalStream::shutdown_both, ec);
#endif
  s.close(ec);
}

}  // namespace dsb::broker

#endif  // DSB_BROKER_LOCAL_TRANSPORT_H_
