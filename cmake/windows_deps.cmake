# The dependencies of the Windows cross-build (cmake/toolchain-mingw64.cmake),
# included by the top-level CMakeLists.txt before its find_package calls.
#
# Debian has no MinGW builds of Boost, spdlog, fmt, toml++, CLI11, GoogleTest,
# Google Benchmark or OpenSSL. What we use instead:
#  - Headers: Boost 1.81, spdlog, fmt, toml++ and CLI11 are header-only or
#    can be. A folder of symbolic links, <build>/windows-deps/include/{boost,
#    spdlog,fmt,toml++,CLI} -> /usr/include/..., is their one include folder
#    (a SYSTEM one: their warnings are not ours). Never /usr/include itself:
#    glibc's headers there would win over MinGW's.
#  - Imported targets with the names the project already uses, so the
#    CMakeLists of the parts stay as on Linux: Boost::headers, Boost::json
#    (compiled once from <boost/json/src.hpp>: cmake/windows/boost_json.cc),
#    spdlog::spdlog (header-only, with fmt header-only), CLI11::CLI11,
#    tomlplusplus::tomlplusplus (header-only).
#  - The project's find_package(... CONFIG) calls find them through small
#    config files written to CMAKE_FIND_PACKAGE_REDIRECTS_DIR, which
#    find_package searches before anywhere else (CMake >= 3.24).
#  - GoogleTest and GoogleMock built from Debian's sources (/usr/src/googletest,
#    package googletest) as GTest::gtest, GTest::gtest_main,
#    GTest::gmock, GTest::gmock_main; find_package(GTest CONFIG) finds them.
#  - Google Benchmark: none (libbenchmark-dev ships Linux objects only), so
#    DSB_BUILD_BENCH is OFF; the Windows benchmarks are plain programs.
#  - OpenSSL: none; the crypto seam uses CNG (bcrypt) on Windows
#    (broker/crypto/). OpenSSL is not searched on Windows.
#  - Asio's Windows libraries: ws2_32 and mswsock, linked by dsb::asio (top
#    level CMakeLists.txt).
#  - Tests: discovered when CTest runs them (DISCOVERY_MODE PRE_TEST), not at
#    build time, so building needs no Wine.
if(NOT WIN32)
  message(FATAL_ERROR "cmake/windows_deps.cmake is for the Windows build only")
endif()

set(DSB_WINDOWS_DEPS_DIR ${CMAKE_BINARY_DIR}/windows-deps)
set(DSB_WINDOWS_HEADERS_FROM /usr/include CACHE PATH
  "folder whose boost, spdlog, fmt, toml++ and CLI headers the Windows build uses")

# For every target: the Windows 10 API level (GetNamedPipeClientProcessId,
# CNG; MinGW defaults to an older _WIN32_WINNT); <windows.h> without winsock 1,
# which would clash with Asio's winsock2 (WIN32_LEAN_AND_MEAN: include what it
# leaves out, e.g. <sddl.h>, by name); no min/max macros (NOMINMAX).
add_compile_definitions(_WIN32_WINNT=0x0A00 WIN32_LEAN_AND_MEAN NOMINMAX)

# The symlink folder, rebuilt at each configure (REMOVE_RECURSE removes the
# links, never what they point to).
set(inc ${DSB_WINDOWS_DEPS_DIR}/include)
file(REMOVE_RECURSE ${inc})
file(MAKE_DIRECTORY ${inc})
foreach(lib boost spdlog fmt toml++ CLI)
  if(NOT IS_DIRECTORY ${DSB_WINDOWS_HEADERS_FROM}/${lib})
    message(FATAL_ERROR "dsb (Windows): ${DSB_WINDOWS_HEADERS_FROM}/${lib} is missing; "
      "install the Debian packages libboost1.81-dev libboost-json1.81-dev libspdlog-dev "
      "libfmt-dev libtomlplusplus-dev libcli11-dev (tools/run windows-build does)")
  endif()
  file(CREATE_LINK ${DSB_WINDOWS_HEADERS_FROM}/${lib} ${inc}/${lib} SYMBOLIC)
endforeach()
file(STRINGS ${inc}/boost/version.hpp boost_lib_version REGEX "define BOOST_LIB_VERSION")
string(REGEX MATCH "[0-9]+_[0-9]+" boost_lib_version "${boost_lib_version}")
string(REPLACE "_" "." DSB_WINDOWS_BOOST_VERSION "${boost_lib_version}.0")

# Imported INTERFACE targets: their include folders count as SYSTEM ones.
function(dsb_windows_header_target name)
  cmake_parse_arguments(A "" "" "DEFINES;LIBS" ${ARGN})
  add_library(${name} INTERFACE IMPORTED GLOBAL)
  set_target_properties(${name} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${inc})
  if(A_DEFINES)
    set_property(TARGET ${name} PROPERTY INTERFACE_COMPILE_DEFINITIONS ${A_DEFINES})
  endif()
  if(A_LIBS)
    set_property(TARGET ${name} PROPERTY INTERFACE_LINK_LIBRARIES ${A_LIBS})
  endif()
endfunction()

dsb_windows_header_target(Boost::headers)
# Boost.System is header-only; a few Boost CMake users ask for it by name.
dsb_windows_header_target(Boost::system LIBS Boost::headers)
add_library(dsb_win_boost_json STATIC ${PROJECT_SOURCE_DIR}/cmake/windows/boost_json.cc)
target_link_libraries(dsb_win_boost_json PUBLIC Boost::headers)
dsb_windows_header_target(Boost::json LIBS dsb_win_boost_json)
# fmt as headers only (no libfmt for MinGW); spdlog's tweakme.h already asks
# for the external fmt (SPDLOG_FMT_EXTERNAL).
dsb_windows_header_target(fmt::fmt-header-only DEFINES FMT_HEADER_ONLY)
# spdlog compiled once (SPDLOG_COMPILED_LIB, cmake/windows/spdlog.cc): header-only it
# cost every unit that logs ~6 CPU-s more (docs/notes.md, "CI time (issue 13)").
add_library(dsb_win_spdlog STATIC ${PROJECT_SOURCE_DIR}/cmake/windows/spdlog.cc)
target_compile_definitions(dsb_win_spdlog PUBLIC SPDLOG_COMPILED_LIB SPDLOG_FMT_EXTERNAL)
target_link_libraries(dsb_win_spdlog PUBLIC fmt::fmt-header-only)
dsb_windows_header_target(spdlog::spdlog LIBS dsb_win_spdlog)
dsb_windows_header_target(spdlog::spdlog_header_only LIBS spdlog::spdlog)
dsb_windows_header_target(CLI11::CLI11)
dsb_windows_header_target(tomlplusplus::tomlplusplus DEFINES TOML_HEADER_ONLY=1)

# Config files for find_package(<name> CONFIG): the targets exist already.
set(redirects ${CMAKE_FIND_PACKAGE_REDIRECTS_DIR})
function(dsb_windows_redirect name version)
  string(TOLOWER ${name} lower)
  file(WRITE ${redirects}/${lower}-config.cmake
    "# Written by cmake/windows_deps.cmake: ${name}'s targets are made there.\n"
    "set(${name}_FOUND TRUE)\nset(${name}_VERSION ${version})\n"
    "foreach(c \${${name}_FIND_COMPONENTS})\n  set(${name}_\${c}_FOUND TRUE)\nendforeach()\n")
  file(WRITE ${redirects}/${lower}-config-version.cmake
    "set(PACKAGE_VERSION ${version})\n"
    "if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)\n"
    "  set(PACKAGE_VERSION_COMPATIBLE FALSE)\nelse()\n"
    "  set(PACKAGE_VERSION_COMPATIBLE TRUE)\nendif()\n")
endfunction()
dsb_windows_redirect(Boost ${DSB_WINDOWS_BOOST_VERSION})
dsb_windows_redirect(spdlog 1.10.0)
dsb_windows_redirect(CLI11 2.1.2)
dsb_windows_redirect(tomlplusplus 3.3.0)

if(DSB_BUILD_TESTS)
  if(NOT EXISTS /usr/src/googletest/CMakeLists.txt)
    message(FATAL_ERROR "dsb (Windows): /usr/src/googletest is missing; install the Debian "
      "package googletest (tools/run windows-build does)")
  endif()
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  set(BUILD_GMOCK ON CACHE BOOL "" FORCE)
  add_subdirectory(/usr/src/googletest ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL SYSTEM)
  file(STRINGS /usr/src/googletest/CMakeLists.txt gtest_version REGEX "GOOGLETEST_VERSION [0-9.]+")
  string(REGEX MATCH "[0-9.]+" gtest_version "${gtest_version}")
  dsb_windows_redirect(GTest ${gtest_version})
  # Discover the test cases when CTest runs (under Wine), not after each link.
  set(CMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE PRE_TEST)
endif()
if(DSB_BUILD_BENCH)
  message(STATUS "dsb (Windows): DSB_BUILD_BENCH off: Debian has no Google Benchmark for MinGW")
  set(DSB_BUILD_BENCH OFF)
  set(DSB_WINDOWS_NO_BENCH ON)  # said in windows-skipped.txt (cmake/windows_parts.cmake)
endif()
if(DSB_BUILD_FUZZ)
  message(STATUS "dsb (Windows): DSB_BUILD_FUZZ off: libFuzzer is clang on Linux only")
  set(DSB_BUILD_FUZZ OFF)
endif()
