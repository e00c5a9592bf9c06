// adopt_peer: the two sides of the adoption test (owner_adoption_test.cc),
// run as throw-away users:
//   adopt_peer hold SOCKET TARGET
//     registers with the client library, takes one action slot and keeps it
//     (re-registering after a broker restart, as DigiScope does) until killed;
//     prints "holding owner=N slot=I", or "error <name>: <message>" (exit 3).
//   adopt_peer ask SOCKET JSON
//     sends JSON as one raw request, prints "reply <json>" (exit 0), or
//     "error <message>" (exit 3).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "common/local_frame.h"
#include "dsb/client.h"

namespace {

int Hold(const char* socket, const char* target) {
  dsb::ClientOptions o;
  o.socket_path = socket;
  o.target = target;
  o.name = "adopt-holder";
  o.connect_timeout = std::chrono::seconds(10);
  std::error_code ec;
  std::string message;
  auto c = dsb::Client::Connect(o, ec, &message);
  if (!c) {
    std::printf("error %s: %s\n", dsb::ErrcName(static_cast<dsb::Errc>(ec.value())),
                message.c_str());
    return 3;
  }
  dsb::Permit p = c->TryAcquire(ec);
  if (!p) {
    std::printf("error %s: acquire: %s\n", dsb::ErrcName(static_cast<dsb::Errc>(ec.value())),
                ec.message().c_str());
    return 3;
  }
  std::printf("holding owner=%u slot=%u\n", c->Info().owner_id, p.slot_index());
  std::fflush(stdout);
  for (;;) ::pause();  // the test kills it
}

int Ask(const char* socket, const char* request) {
  auto fd = dsb::ConnectLocal(socket);
  if (!fd.ok()) {
    std::printf("error %s\n", fd.status().message().c_str());
    return 3;
  }
  if (dsb::Status st = dsb::WriteFrame(*fd, request); !st.ok()) {
    std::printf("error %s\n", st.message().c_str());
    return 3;
  }
  auto reply = dsb::ReadFrame(*fd, std::chrono::seconds(10));
  ::close(*fd);
  if (!reply.ok()) {
    std::printf("error %s\n", reply.status().message().c_str());
    return 3;
  }
  std::printf("reply %s\n", reply->c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (argc == 4 && mode == "hold") return Hold(argv[2], argv[3]);
  if (argc == 4 && mode == "ask") return Ask(argv[2], argv[3]);
  std::printf("usage: adopt_peer hold SOCKET TARGET | adopt_peer ask SOCKET JSON\n");
  return 2;
}
