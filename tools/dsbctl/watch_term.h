// What dsbctl watch's terminal loops share (watch_term_posix.cc, watch_term_win.cc; both
// implement watch.h's Run). Internal to dsbctl; the pure parts stay in watch.h.
#ifndef DSB_TOOLS_DSBCTL_WATCH_TERM_H_
#define DSB_TOOLS_DSBCTL_WATCH_TERM_H_

#include <chrono>
#include <string>

#include "tools/dsbctl/watch.h"

namespace dsb::ctl::watch {

// A terminal's size in columns and rows (80x24 when it has none).
struct Size {
  int width = 80;
  int height = 24;
};

// Width of plain frames into a pipe or a file: $COLUMNS if it is a sane number (20..1000),
// else 80.
int PlainWidth();

// The local wall clock as HH:MM:SS (the frame's title).
std::string WallClock();

// One round of requests (status, and leases in a cluster). A failure keeps `last`'s numbers
// with the reason and connected = false.
Model Fetch(const Call& call, const Model& last, std::chrono::milliseconds interval);

}  // namespace dsb::ctl::watch

#endif  // DSB_TOOLS_DSBCTL_WATCH_TERM_H_
