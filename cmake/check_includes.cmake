# cmake -DSOURCE_DIR=<repo> -DDIRS=<dir,dir...> -P check_includes.cmake
# Fails when an #include in a C/C++ file under SOURCE_DIR/<dir> names a path
# holding "..". The per-library include roots (include_roots.cmake) expose
# only the folders a target owns, but a path such as "shm/../broker/target.h"
# climbs out of such a folder into the repository and reaches any header: the
# build would no longer enforce the layering. Run by the test include_no_dotdot.
if(NOT DEFINED SOURCE_DIR OR NOT DEFINED DIRS)
  message(FATAL_ERROR "usage: cmake -DSOURCE_DIR=<repo> -DDIRS=<dir,...> -P check_includes.cmake")
endif()
# Commas: a ";" does not survive add_test's command line.
string(REPLACE "," ";" DIRS "${DIRS}")
set(bad "")
set(count 0)
foreach(dir ${DIRS})
  if(NOT IS_DIRECTORY ${SOURCE_DIR}/${dir})
    message(FATAL_ERROR "check_includes: ${SOURCE_DIR}/${dir} is not a folder")
  endif()
  file(GLOB_RECURSE files LIST_DIRECTORIES false
    ${SOURCE_DIR}/${dir}/*.h ${SOURCE_DIR}/${dir}/*.hh ${SOURCE_DIR}/${dir}/*.hpp
    ${SOURCE_DIR}/${dir}/*.c ${SOURCE_DIR}/${dir}/*.cc ${SOURCE_DIR}/${dir}/*.cpp
    ${SOURCE_DIR}/${dir}/*.ipp ${SOURCE_DIR}/${dir}/*.inc ${SOURCE_DIR}/${dir}/*.in)
  foreach(file ${files})
    math(EXPR count "${count} + 1")
    # Lines with a directive, then those whose quoted or <> path holds "..".
    file(STRINGS ${file} lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line ${lines})
      if(line MATCHES "^[ \t]*#[ \t]*include(_next)?[ \t]*[<\"][^>\"]*\\.\\.")
        file(RELATIVE_PATH rel ${SOURCE_DIR} ${file})
        string(APPEND bad "  ${rel}: ${line}\n")
      endif()
    endforeach()
  endforeach()
endforeach()
if(NOT bad STREQUAL "")
  message(FATAL_ERROR "#include paths holding \"..\" (they escape the per-library "
    "include roots of cmake/include_roots.cmake; include by the repository-rooted path "
    "of a header the target may see):\n${bad}")
endif()
message(STATUS "check_includes: no \"..\" in the #include lines of ${count} files under ${DIRS}")
