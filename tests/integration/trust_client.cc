// trust_client: a DigiScope stand-in run as another user by the client-trust
// tests (issue 9). Connects with the client library, takes one action slot,
// gives everything back and reports on stdout:
//   trust_client SOCKET TARGET TIMEOUT_MS [BROKER_USER]
//   -> "connected owner=N segment=S" and "acquired slot=I", exit 0
//   -> "error <name>: <message>", exit 3
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "dsb/client.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::printf("usage: trust_client SOCKET TARGET TIMEOUT_MS [BROKER_USER]\n");
    return 2;
  }
  dsb::ClientOptions o;
  o.socket_path = argv[1];
  o.target = argv[2];
  o.name = "trust-client";
  o.connect_timeout = std::chrono::milliseconds(std::strtol(argv[3], nullptr, 10));
  if (argc > 4) o.broker_user = argv[4];
  std::error_code ec;
  std::string message;
  auto c = dsb::Client::Connect(o, ec, &message);
  if (!c) {
    std::printf("error %s: %s\n", dsb::ErrcName(static_cast<dsb::Errc>(ec.value())),
                message.c_str());
    return 3;
  }
  std::printf("connected owner=%u segment=%s\n", c->Info().owner_id, c->Info().segment.c_str());
  dsb::Permit p = c->Acquire(o.connect_timeout, ec);
  if (!p) {
    std::printf("error %s: acquire: %s\n", dsb::ErrcName(static_cast<dsb::Errc>(ec.value())),
                ec.message().c_str());
    return 3;
  }
  std::printf("acquired slot=%u\n", p.slot_index());
  return 0;
}
