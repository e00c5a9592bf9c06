# cmake -DPROGRAM=<path> -DNAME=<name> -DVERSION=<project version> -P version_check.cmake
# Passes when `<program> --version` exits 0 and its first line is "<name> <version>",
# optionally followed by " (...)" (the broker adds its protocol versions).
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
