// The socket headers line_client.cc needs for address parsing (sockaddr_in, sockaddr_in6,
// sockaddr_storage, inet_pton, htons): Winsock 2 on Windows, BSD sockets elsewhere. Only for
// the LineClient files; the socket calls themselves are in line_client_posix.cc and
// line_client_win.cc.
#ifndef DSB_TOOLS_LOAD_LINE_CLIENT_SOCKET_H_
#define DSB_TOOLS_LOAD_LINE_CLIENT_SOCKET_H_

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#endif  // DSB_TOOLS_LOAD_LINE_CLIENT_SOCKET_H_
