#!/usr/bin/env bash
# Configures and builds a second tree with DSB_BUILD_BROKER=OFF while every
# broker dependency is made unfindable (CMAKE_DISABLE_FIND_PACKAGE_<name>):
# the client libraries must need Boost's headers only. Each run configures
# afresh (--fresh: a new cache, so CMake reports which of those variables no
# find_package used) but keeps the tree's objects, so a rerun builds only what
# changed.
# Usage: client_only_build.sh SOURCE_DIR TREE CMAKE C_COMPILER CXX_COMPILER GENERATOR [LAUNCHER]
set -euo pipefail
src=$1 tree=$2 cmake=$3 cc=$4 cxx=$5 generator=$6 launcher=${7:-}
fail() { echo "FAIL: $*" >&2; exit 1; }
args=(--fresh -S "$src" -B "$tree" -G "$generator" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx"
  -DCMAKE_BUILD_TYPE= -DDSB_WERROR=ON -DDSB_BUILD_BROKER=OFF)
for pkg in spdlog CLI11 tomlplusplus OpenSSL GTest benchmark PostgreSQL; do
  args+=("-DCMAKE_DISABLE_FIND_PACKAGE_$pkg=ON")
done
if [ -n "$launcher" ]; then
  args+=("-DCMAKE_C_COMPILER_LAUNCHER=$launcher" "-DCMAKE_CXX_COMPILER_LAUNCHER=$launcher")
fi
"$cmake" "${args[@]}" >"$tree.configure.log" 2>&1 ||
  { cat "$tree.configure.log"; fail "client-only configure"; }
"$cmake" --build "$tree" >"$tree.build.log" 2>&1 || { cat "$tree.build.log"; fail "client-only build"; }
for so in libdsb.so libdsb-client.so; do
  [ -e "$tree/lib/$so" ] || fail "client-only build made no $so"
done
# CMake lists a CMAKE_DISABLE_FIND_PACKAGE_<name> as "not used" when no
# find_package(<name>) ran at all: so none of them may be missing from that list
# (a required one would have failed the configure already).
for pkg in spdlog CLI11 tomlplusplus OpenSSL GTest benchmark PostgreSQL; do
  grep -q -x "  *CMAKE_DISABLE_FIND_PACKAGE_$pkg" "$tree.configure.log" ||
    fail "the client-only configure looked for $pkg (see $tree.configure.log)"
done
ls "$tree/lib"
echo "PASS: client libraries built with DSB_BUILD_BROKER=OFF and no broker dependency"
