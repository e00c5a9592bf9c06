// fake_broker: an impostor on the broker's socket, for the client-trust tests
// (issue 9). A user who can write the socket's folder renames the real socket
// away and listens at its path; this program plays that user's listener.
//
//   fake_broker --socket PATH --mode register|silent|noaccept|deaf
//               [--segment NAME] [--segment-owner UID] [--segment-mode OCTAL]
//
// register: makes a slot table of its own (capacity 10 of 16 slots, target
//   "exch01"; optionally chowned/chmodded afterwards) and answers every
//   "register" with it, every other request with {"ok":true}.
// silent:   accepts connections and never reads or answers.
// noaccept: listens with a backlog of 0 and never accepts.
// deaf:     as register, but stops reading a connection once it answered
//           its registration.
// Prints "fake broker ready" when listening and "received <op>" for every
// request it reads (unbuffered), so a test can tell whether a client sent
// anything. Runs until killed; the test removes the segment.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/local_frame.h"
#include "shm/slot_table.h"

namespace json = boost::json;

namespace {

int Die(const std::string& what) {
  std::printf("fake broker: %s\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  ::signal(SIGPIPE, SIG_IGN);
  std::string socket_path, mode = "register", segment;
  long owner = -1, seg_mode = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* v = argv[i + 1];
    if (flag == "--socket") socket_path = v;
    else if (flag == "--mode") mode = v;
    else if (flag == "--segment") segment = v;
    else if (flag == "--segment-owner") owner = std::strtol(v, nullptr, 10);
    else if (flag == "--segment-mode") seg_mode = std::strtol(v, nullptr, 8);
    else return Die("unknown flag " + flag);
  }
  if (socket_path.empty()) return Die("--socket is required");

  std::unique_ptr<dsb::shm::SlotTable> table;
  if (mode == "register" || mode == "deaf") {
    if (segment.empty()) return Die("--segment is required in register and deaf mode");
    dsb::shm::CreateOptions co;
    co.name = segment;
    co.target = "exch01";
    co.slot_count = 16;
    co.capacity = 10;
    auto t = dsb::shm::SlotTable::Create(co);
    if (!t.ok()) return Die(t.status().message());
    table = std::move(t).value();
    const std::string file = "/dev/shm/" + segment;
    if (owner >= 0 && ::chown(file.c_str(), static_cast<uid_t>(owner), static_cast<gid_t>(-1)) != 0) {
      return Die("chown " + file + ": " + std::strerror(errno));
    }
    if (seg_mode >= 0 && ::chmod(file.c_str(), static_cast<mode_t>(seg_mode)) != 0) {
      return Die("chmod " + file + ": " + std::strerror(errno));
    }
  }

  const int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (lfd < 0 || socket_path.size() >= sizeof addr.sun_path) return Die("bad socket");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  ::unlink(socket_path.c_str());
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Die("bind " + socket_path + ": " + std::strerror(errno));
  }
  ::chmod(socket_path.c_str(), 0777);  // anyone may talk to the impostor
  if (::listen(lfd, mode == "noaccept" ? 0 : 64) != 0) return Die("listen");
  std::printf("fake broker ready (uid %u, mode %s)\n", static_cast<unsigned>(::geteuid()),
              mode.c_str());

  std::vector<pollfd> fds{{lfd, POLLIN, 0}};
  for (;;) {
    if (mode == "noaccept") {
      ::pause();
      continue;
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return Die("poll");
    }
    if ((fds[0].revents & POLLIN) != 0) {
      const int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        std::printf("accepted a connection\n");
        // silent: keep it open, never read it.
        fds.push_back({c, static_cast<short>(mode == "silent" ? 0 : POLLIN), 0});
      }
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      auto frame = dsb::ReadFrame(fds[i].fd, std::chrono::milliseconds(1000));
      if (!frame.ok()) {
        ::close(fds[i].fd);
        fds.erase(fds.begin() + static_cast<std::ptrdiff_t>(i));
        --i;
        continue;
      }
      boost::system::error_code ec;
      json::value v = json::parse(*frame, ec);
      std::string op = "?";
      if (!ec && v.is_object() && v.as_object().contains("op") &&
          v.as_object().at("op").is_string()) {
        op = std::string(v.as_object().at("op").as_string());
      }
      std::printf("received %s\n", op.c_str());
      json::object reply{{"ok", true}};
      if (op == "register" && table) {
        reply = {{"ok", true},
                 {"owner", table->AllocateOwner()},
                 {"segment", segment},
                 {"instance", std::to_string(table->instance_id())},
                 {"system_slot", "table"},
                 {"mode", "single"},
                 {"capacity", 10}};
      } else if (op == "status") {
        reply = {{"ok", true}, {"targets", json::array{}}};
      }
      (void)dsb::WriteFrame(fds[i].fd, json::serialize(reply));
      if (mode == "deaf" && op == "register") fds[i].events = 0;  // never read it again
    }
  }
}
