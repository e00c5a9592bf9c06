// A DigiScope-like client of a real broker (dsb/client.h) taking permits, for
// integration tests. Header-only: the test links dsb::client. Tests only.
#ifndef DSB_TESTS_SUPPORT_CLIENT_PERMITS_H_
#define DSB_TESTS_SUPPORT_CLIENT_PERMITS_H_

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "dsb/client.h"

namespace dsb::testing {

// A client of the broker at `socket` for `target`, named `name`; nullptr (and a
// test failure naming why) if it cannot connect.
inline std::unique_ptr<Client> ConnectClient(const std::filesystem::path& socket,
                                             const std::string& target, const std::string& name) {
  ClientOptions o;
  o.socket_path = socket.string();
  o.target = target;
  o.name = name;
  std::error_code ec;
  std::string message;
  auto c = Client::Connect(o, ec, &message);
  EXPECT_TRUE(c) << message;
  return c;
}

// Takes permits until `n` are held or `within` passes (the lease grows as the
// broker reports the demand); each try waits at most 500 ms.
inline std::vector<Permit> TakePermits(Client& c, std::size_t n, std::chrono::seconds within) {
  std::vector<Permit> out;
  const auto end = std::chrono::steady_clock::now() + within;
  while (out.size() < n && std::chrono::steady_clock::now() < end) {
    std::error_code ec;
    Permit p = c.Acquire(std::chrono::milliseconds(500), ec);
    if (p.valid()) out.push_back(std::move(p));
  }
  return out;
}

}  // namespace dsb::testing

#endif  // DSB_TESTS_SUPPORT_CLIENT_PERMITS_H_
