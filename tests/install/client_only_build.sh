#!/usr/bin/env bash
# Configures and builds a second tree with DSB_BUILD_BROKER=OFF while every
# broker dependency is made unfindable (CMAKE_DISABLE_FIND_PACKAGE_<name>):
# the client libraries must need Boost's headers only. The tree is kept under
# the build folder between runs, so a rerun builds only what changed.
# Usage: client_only_build.sh SOURCE_DIR TREE CMAKE C_COMPILER CXX_COMPILER GENERATOR [LAUNCHER]
set -euo pipefail
src=$1 tree=$2 cmake=$3 cc=$4 cxx=$5 generator=$6 launcher=${7:-}
fail() { echo "FAIL: $*" >&2; exit 1; }
args=(-S "$src" -B "$tree" -G "$generator" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx"
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
if grep -q -E '^(spdlog|CLI11|tomlplusplus|GTest|benchmark)_DIR:PATH=/' "$tree/CMakeCache.txt"; then
  fail "a broker dependency was searched in the client-only tree"
fi
ls "$tree/lib"
echo "PASS: client libraries built with DSB_BUILD_BROKER=OFF and no broker dependency"
