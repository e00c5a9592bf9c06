// dsb-service-probe.exe: a stand-in broker for windows_service_test (Windows
// only). It runs dsb-broker.exe's service plumbing (windows_service.cc,
// control_win.cc, service_notify_win.cc) around a body that writes what
// happens to a file instead of serving, so the plumbing is tested under
// Wine's service control manager without the rest of the broker.
//
//   probe --install-service --service-name N --config FILE
//   probe --uninstall-service --service-name N
//   probe --service --service-name N --config FILE   (what the SCM runs)
//   probe --config FILE                              (console mode)
// The body appends "ready", "stop: <what>", "reload: <what>", "stopped
// <code>" lines to FILE; it exits 3 when FILE ends in ".exit3" (the exit
// code reported to the SCM), else 0.
#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "broker/service/control.h"
#include "broker/service/service_notify.h"
#include "broker/service/windows_service.h"

namespace {

void Append(const std::string& file, const std::string& line) {
  std::ofstream out(file, std::ios::app);
  out << line << "\n";
}

int Body(const std::string& file) {
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  dsb::broker::ControlEvents control(io);
  control.OnStop([&](const std::string& what) {
    Append(file, "stop: " + what);
    dsb::broker::NotifyServiceStopping("stopping");
    control.Cancel();
    work.reset();
  });
  std::function<void()> arm_reload = [&] {
    control.OnReload([&](const std::string& what) {
      Append(file, "reload: " + what);
      arm_reload();
    });
  };
  arm_reload();
  Append(file, "ready");  // first: a test that sees RUNNING reads it at once
  dsb::broker::NotifyServiceReady("probe");
  io.run();
  const int code = file.size() > 6 && file.ends_with(".exit3") ? 3 : 0;
  Append(file, "stopped " + std::to_string(code));
  dsb::broker::NotifyStopped();
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  dsb::broker::HoldControlEvents();
  std::string mode = "console", name = dsb::broker::kDefaultServiceName, file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--install-service" || a == "--uninstall-service" || a == "--service") {
      mode = a.substr(2);
    } else if (a == "--service-name" && i + 1 < argc) {
      name = argv[++i];
    } else if (a == "--config" && i + 1 < argc) {
      file = argv[++i];
    } else {
      std::fprintf(stderr, "service_probe: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (mode == "install-service") {
    auto notes = dsb::broker::InstallService(name, file);
    if (!notes.ok()) {
      std::fprintf(stderr, "%s\n", notes.status().message().c_str());
      return 1;
    }
    for (const std::string& note : *notes) std::printf("%s\n", note.c_str());
    return 0;
  }
  if (mode == "uninstall-service") {
    dsb::Status st = dsb::broker::UninstallService(name);
    if (!st.ok()) std::fprintf(stderr, "%s\n", st.message().c_str());
    return st.ok() ? 0 : 1;
  }
  if (mode == "service") return dsb::broker::RunAsService(name, [&] { return Body(file); });
  return Body(file);
}
