# cmake -DPROGRAM=<path> -DNAME=<name> -DVERSION=<project version> -P version_check.cmake
# Passes when `<program> --version` exits 0 and its first line is "<name> <version>",
# optionally followed by " (...)" (the broker adds its protocol versions); and that
# a usage error exits 2.
execute_process(COMMAND ${PROGRAM} --version RESULT_VARIABLE rc OUTPUT_VARIABLE out
  ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "${NAME} --version exited ${rc}\nstdout: ${out}\nstderr: ${err}")
endif()
string(REGEX REPLACE "\n.*" "" first "${out}")
string(REPLACE "." "\\." version_re "${VERSION}")
if(NOT first MATCHES "^${NAME} ${version_re}( \\(.*\\))?$")
  message(FATAL_ERROR "${NAME} --version printed \"${out}\", expected \"${NAME} ${VERSION}\"")
endif()
message(STATUS "${first}")

# A usage error (an option no program has) exits 2 with a message, like a bad config.
# dsb-bench's and dsb-lease-bench's options are Google Benchmark's, whose parser exits 1:
# left as it is.
if(NAME MATCHES "^dsb-(lease-)?bench$")
  return()
endif()
execute_process(COMMAND ${PROGRAM} --no-such-option-xyz RESULT_VARIABLE rc OUTPUT_VARIABLE out
  ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc STREQUAL "2")
  message(FATAL_ERROR "${NAME} --no-such-option-xyz exited ${rc}, expected 2\nstdout: ${out}\nstderr: ${err}")
endif()
if("${out}${err}" STREQUAL "")
  message(FATAL_ERROR "${NAME} --no-such-option-xyz exited 2 without a message")
endif()
