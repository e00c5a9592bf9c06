// The broker's log file (broker.log_file), opened without following a link.
//
// spdlog's own file sink opens by name (fopen), following a symbolic link
// planted at the name; this sink writes to a descriptor opened by
// OpenForAppendNoFollow (secure_fs.h) in a folder checked to be private.
#ifndef DSB_BROKER_LOG_FILE_H_
#define DSB_BROKER_LOG_FILE_H_

#include <spdlog/logger.h>
#include <spdlog/sinks/sink.h>

#include <filesystem>
#include <memory>

#include "common/status.h"

namespace dsb::broker {

// Makes the log file's folder private if missing (0755; secure_fs.h rules,
// as for state_dir), then opens the file to append (created 0640): a
// regular file owned by the broker or root, writable by nobody else.
// Success: a thread-safe sink writing each formatted line with one write(2).
// Failure: kConfig "broker.log_file <file>: ..." naming the folder or file
// and what is wrong (a folder, a symbolic link, another user's file, a
// folder others can write); folders this call made are removed again.
Result<std::shared_ptr<spdlog::sinks::sink>> OpenLogFile(const std::filesystem::path& file);

// SIGHUP (logrotate renamed the file): opens `file` again by the same rules
// and makes the log file sink of `logger` (one made by OpenLogFile) write
// there; the old descriptor is closed after the switch, so no line is lost
// or torn. `file` may differ from the path opened first (broker.log_file
// changed). Thread-safe against concurrent logging (the sink's own mutex).
// Success: Ok. Failure: kConfig as OpenLogFile (the sink keeps writing to
// the old descriptor); kInvalidArgument if `logger` has no log file sink
// (the broker logs to stderr).
Status ReopenLogFile(spdlog::logger& logger, const std::filesystem::path& file);

}  // namespace dsb::broker

#endif  // DSB_BROKER_LOG_FILE_H_
