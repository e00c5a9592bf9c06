# Cross-compiling dsb for 64-bit Windows on Debian: MinGW-w64 GCC 12 with
# POSIX threads (Debian g++-mingw-w64-x86-64-posix). Used by the `windows`
# preset (CMakePresets.json); docs/windows.md, "Building for Windows".
#
# - The "-posix" compilers: std::thread, std::mutex and the C++20 atomics
#   waits need winpthreads; the "-win32" flavour has no std::thread.
# - Static runtime (-static): libgcc, libstdc++ and libwinpthread are linked
#   in, so an .exe or dsb.dll needs no MinGW DLL beside it (on Windows, or in
#   Wine's prefix).
# - Find roots: only the MinGW sysroot. Nothing from the Linux /usr/lib or
#   /usr/include is found or linked; the few header-only libraries taken from
#   Debian come in through cmake/windows_deps.cmake's folder of symlinks.
# - Tests run through Wine: CMAKE_CROSSCOMPILING_EMULATOR is cmake/wine-run,
#   which CTest and gtest_discover_tests put before each .exe.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_VERSION 10.0)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(DSB_MINGW_TRIPLE x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${DSB_MINGW_TRIPLE}-gcc-posix)
set(CMAKE_CXX_COMPILER ${DSB_MINGW_TRIPLE}-g++-posix)
set(CMAKE_RC_COMPILER ${DSB_MINGW_TRIPLE}-windres)
set(CMAKE_AR ${DSB_MINGW_TRIPLE}-gcc-ar-posix CACHE FILEPATH "archiver")
set(CMAKE_RANLIB ${DSB_MINGW_TRIPLE}-gcc-ranlib-posix CACHE FILEPATH "ranlib")

set(CMAKE_FIND_ROOT_PATH /usr/${DSB_MINGW_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # programs (wine, python) run here
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# _WIN32_WINNT=0x0A00, WIN32_LEAN_AND_MEAN and NOMINMAX: cmake/windows_deps.cmake
# (for every target, whatever CMAKE_CXX_FLAGS a user passes).
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-static")

# Run the cross-built programs (tests, gtest discovery) under Wine, in the
# build's own prefix unless WINEPREFIX is set (cmake/wine-run says how).
set(CMAKE_CROSSCOMPILING_EMULATOR ${CMAKE_CURRENT_LIST_DIR}/wine-run)
