// watch_holder: a DigiScope stand-in for the dsbctl watch test
// (watch_tmux_test.py). Registers with the broker, then follows commands on
// stdin, one per line, answering each on stdout:
//   take N   acquire N more action slots      -> "held K" (action slots held)
//   drop     release every action slot        -> "held 0"
//   EOF      release everything and exit 0
//   watch_holder SOCKET TARGET
// Errors: "error <what>: <message>" and exit 3.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "dsb/client.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::printf("usage: watch_holder SOCKET TARGET\n");
    return 2;
  }
  dsb::ClientOptions o;
  o.socket_path = argv[1];
  o.target = argv[2];
  o.name = "watch-holder";
  std::error_code ec;
  std::string message;
  auto c = dsb::Client::Connect(o, ec, &message);
  if (!c) {
    std::printf("error connect: %s\n", message.c_str());
    return 3;
  }
  std::printf("connected\n");
  std::fflush(stdout);
  std::vector<dsb::Permit> held;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.rfind("take ", 0) == 0) {
      const int n = std::stoi(line.substr(5));
      for (int i = 0; i < n; ++i) {
        dsb::Permit p = c->Acquire(std::chrono::seconds(30), ec);
        if (!p) {
          std::printf("error acquire: %s\n", ec.message().c_str());
          return 3;
        }
        held.push_back(std::move(p));
      }
    } else if (line == "drop") {
      held.clear();
    }
    std::printf("held %zu\n", held.size());
    std::fflush(stdout);
  }
  return 0;
}
