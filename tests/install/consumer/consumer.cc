// An installed-tree consumer of the C++ API (dsb/client.h, libdsb-client).
// argv: socket target. Prints the library's version, connects, acquires,
// releases and closes; exit 0 only if all of it worked. Built as C++17.
#include <dsb/client.h>
#include <dsb/version.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  std::printf("dsb::Version %s (built with %s)\n", dsb::Version(), DSB_VERSION_STRING);
  if (std::strcmp(dsb::Version(), DSB_VERSION_STRING) != 0) return 1;
  dsb::ClientOptions options;
  options.socket_path = argv[1];
  options.target = argv[2];
  options.name = "install-consumer-cxx";
  std::error_code ec;
  std::string why;
  auto client = dsb::Client::Connect(options, ec, &why);
  if (!client) {
    std::fprintf(stderr, "connect: %s (%s)\n", why.c_str(), dsb::ErrcName(dsb::Errc(ec.value())));
    return 1;
  }
  {
    dsb::Permit permit = client->Acquire(std::chrono::seconds(10), ec);
    if (!permit) {
      std::fprintf(stderr, "acquire: %s\n", ec.message().c_str());
      return 1;
    }
    permit.Release();
    if (permit.valid()) return 1;
  }
  client.reset();
  std::printf("c++ consumer: connected, acquired, released, closed\n");
  return 0;
}
