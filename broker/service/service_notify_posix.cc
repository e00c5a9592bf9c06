#include "broker/service/service_notify.h"

#include <unistd.h>

#include <cstring>
#include <spdlog/spdlog.h>
#include <string>

#ifdef DSB_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace dsb::broker {
namespace {

// A STATUS= value is one line: a newline would start another assignment.
std::string OneLine(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

void Send(const std::string& message) {
#ifdef DSB_HAVE_LIBSYSTEMD
  // unset_environment = 0: STOPPING=1 is sent later through the same
  // variable. Only the main process may notify (NotifyAccess=main), so a
  // limit_command that inherits it cannot speak for the broker.
  const int r = ::sd_notify(0, message.c_str());
  if (r < 0) {
    spdlog::warn("cannot notify the service manager ({}): {}", message.substr(0, message.find('\n')),
                 std::strerror(-r));
  }
#else
  (void)message;
#endif
}

}  // namespace

void NotifyServiceReady(std::string_view status) {
  Send("READY=1\nMAINPID=" + std::to_string(::getpid()) + "\nSTATUS=" + OneLine(status));
}

void NotifyServiceStopping(std::string_view status) {
  Send("STOPPING=1\nSTATUS=" + OneLine(status));
}

bool ServiceNotifyBuiltIn() {
#ifdef DSB_HAVE_LIBSYSTEMD
  return true;
#else
  return false;
#endif
}

}  // namespace dsb::broker
