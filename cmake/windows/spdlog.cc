// spdlog compiled once for the Windows build (cmake/windows_deps.cmake builds
// this file into dsb_win_spdlog, which its spdlog::spdlog target links).
// Why: Debian has no MinGW spdlog library, and header-only spdlog put its
// definitions (the *-inl.h files: pattern formatter, registry, sinks) into
// every translation unit that logs, ~6 CPU-s more each under MinGW -O2 (26
// such units: ~2.5 min of CI's Windows build; docs/notes.md, "CI time
// (issue 13)"). With SPDLOG_COMPILED_LIB the headers declare only; this file
// includes the definitions once and instantiates the templates the project
// uses through declarations alone (its own sinks derive from
// base_sink<std::mutex>; the tools log to stderr_color_mt). A new spdlog
// template used by the project links with an undefined reference until it is
// instantiated here. fmt stays header-only: with spdlog compiled, it costs a
// unit ~0.1 CPU-s. Include this file in no other target.
#ifndef SPDLOG_COMPILED_LIB
#error "cmake/windows/spdlog.cc is built with SPDLOG_COMPILED_LIB (cmake/windows_deps.cmake)"
#endif

#include <mutex>

#include <spdlog/spdlog-inl.h>
#include <spdlog/common-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/file_helper-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/details/console_globals.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/sinks/wincolor_sink-inl.h>
#include <spdlog/sinks/stdout_color_sinks-inl.h>

template class spdlog::sinks::base_sink<std::mutex>;
template class spdlog::sinks::base_sink<spdlog::details::null_mutex>;
template class spdlog::sinks::wincolor_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::wincolor_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::wincolor_stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::wincolor_stdout_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::wincolor_stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::wincolor_stderr_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_nullmutex>;
template class spdlog::sinks::stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::stdout_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_nullmutex>;
template std::shared_ptr<spdlog::logger> spdlog::stdout_color_mt<spdlog::synchronous_factory>(
    const std::string&, color_mode);
template std::shared_ptr<spdlog::logger> spdlog::stdout_color_st<spdlog::synchronous_factory>(
    const std::string&, color_mode);
template std::shared_ptr<spdlog::logger> spdlog::stderr_color_mt<spdlog::synchronous_factory>(
    const std::string&, color_mode);
template std::shared_ptr<spdlog::logger> spdlog::stderr_color_st<spdlog::synchronous_factory>(
    const std::string&, color_mode);
