// The broker's log file (broker.log_file), opened without following a link.
//
// spdlog's own file sink opens by name (fopen), following a symbolic link
// planted at the name; this sink writes to a descriptor opened by
// OpenForAppendNoFollow (secure_fs.h) in a folder checked to be private.
#ifndef DSB_BROKER_LOG_FILE_H_
#define DSB_BROKER_LOG_FILE_H_

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

}  // namespace dsb::broker

#endif  // DSB_BROKER_LOG_FILE_H_
