#!/usr/bin/env bash
# Installs this build into a temporary prefix, then builds a C program and a
# C++ program (consumer/) against the installed tree, once through CMake
# (find_package(dsb CONFIG)) and once through pkg-config (dsb.pc,
# dsb-client.pc), and runs each against a real dsb-broker started here. Fails
# on any missing piece: a file not installed, a header that does not compile
# on its own, a Boost library needed, a program that cannot connect.
# Usage: consumer_test.sh BUILD_DIR CMAKE C_COMPILER CXX_COMPILER GENERATOR
set -euo pipefail
build=$1 cmake=$2 cc=$3 cxx=$4 generator=$5
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)  # 0700 and ours: the broker accepts it for its folders
name=inst$$
broker_pid=
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  rm -f "/dev/shm/dsb-$name-exch01" "/dev/shm/.dsb-lock-dsb-$name-exch01"
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "cmake --install into $work/prefix"
prefix=$work/prefix
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install $build"; }
lib=$(find "$prefix" -name libdsb.so.0 -printf '%h\n' | head -n 1)
[ -n "$lib" ] || fail "no libdsb.so.0 installed under $prefix"
for f in include/dsb/dsb.h include/dsb/errc_list.h include/dsb/version.h include/dsb/client.h \
  include/dsb/errc.h "${lib#"$prefix"/}/libdsb.so" "${lib#"$prefix"/}/libdsb-client.so.0" \
  "${lib#"$prefix"/}/libdsb-client.so" "${lib#"$prefix"/}/cmake/dsb/dsbConfig.cmake" \
  "${lib#"$prefix"/}/cmake/dsb/dsbConfigVersion.cmake" "${lib#"$prefix"/}/pkgconfig/dsb.pc" \
  "${lib#"$prefix"/}/pkgconfig/dsb-client.pc"; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
for so in "$lib/libdsb.so.0" "$lib/libdsb-client.so.0"; do
  if readelf -d "$so" | grep -E 'NEEDED.*lib(boost|spdlog|fmt|ssl|crypto)'; then
    fail "$so needs a library a client machine should not need"
  fi
done

step "each public header compiles on its own"
for h in dsb.h errc_list.h version.h; do
  printf "#include <dsb/%s>\ntypedef int header_check_;\n" "$h" | "$cc" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
    -I"$prefix/include" -x c - || fail "dsb/$h does not compile alone as C99"
done
for h in dsb.h errc_list.h version.h errc.h client.h; do
  printf "#include <dsb/%s>\ntypedef int header_check_;\n" "$h" | "$cxx" -std=c++17 -pedantic -Wall -Wextra -Werror -fsyntax-only \
    -I"$prefix/include" -x c++ - || fail "dsb/$h does not compile alone as C++17"
done

step "build with CMake: find_package(dsb CONFIG)"
"$cmake" -S "$here/consumer" -B "$work/cmake-build" -G "$generator" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; fail "configure"; }
"$cmake" --build "$work/cmake-build" >>"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "build with find_package(dsb)"; }

step "build with pkg-config"
export PKG_CONFIG_PATH=$lib/pkgconfig
[ "$(pkg-config --modversion dsb)" = "$(pkg-config --modversion dsb-client)" ] ||
  fail "dsb.pc and dsb-client.pc disagree on the version"
for pc in dsb dsb-client; do
  libs=$(pkg-config --libs "$pc")
  case "$libs" in *boost* | *spdlog* | *ssl*) fail "$pc.pc links more than dsb: $libs" ;; esac
done
mkdir "$work/pc-build"
# shellcheck disable=SC2046  # pkg-config output is meant to be split
"$cc" -std=c99 -Wall -Wextra -Werror -o "$work/pc-build/consumer_c" "$here/consumer/consumer.c" \
  $(pkg-config --cflags --libs dsb) -Wl,-rpath,"$(pkg-config --variable=libdir dsb)" ||
  fail "build the C program with pkg-config dsb"
# shellcheck disable=SC2046
"$cxx" -std=c++17 -Wall -Wextra -Werror -o "$work/pc-build/consumer_cxx" \
  "$here/consumer/consumer.cc" $(pkg-config --cflags --libs dsb-client) \
  -Wl,-rpath,"$(pkg-config --variable=libdir dsb-client)" ||
  fail "build the C++ program with pkg-config dsb-client"

for p in cmake-build/consumer_c cmake-build/consumer_cxx pc-build/consumer_c pc-build/consumer_cxx; do
  if readelf -d "$work/$p" | grep -E 'NEEDED.*libboost'; then fail "$p needs Boost"; fi
  # The library found at run time is the installed one, not the build tree's.
  ldd "$work/$p" >"$work/ldd.txt"
  used=$(awk '$1 ~ /^libdsb/ {print $3}' "$work/ldd.txt")
  [ -n "$used" ] && [ "$(dirname "$(realpath -e "$used")")" = "$(realpath -e "$lib")" ] ||
    { cat "$work/ldd.txt"; fail "$p does not use $lib"; }
done

step "start a dsb-broker"
cat >"$work/broker.toml" <<TOML
[broker]
id = "$name"
socket = "$work/run/dsb.sock"
shm_prefix = "$name"
state_dir = "$work/state"

[[targets]]
name = "exch01"
limit = 4
reserve = 0
quarantine = "0s"
TOML
# The log exists before tail looks at it: the background job opens it only after its fork,
# which on a loaded machine came after tail ("cannot open", CI run of 2026-12-07).
: >"$work/broker.log"
"$build/bin/dsb-broker" --config "$work/broker.toml" >>"$work/broker.log" 2>&1 &
broker_pid=$!
# Ready when it says so (tail follows the log by inotify and ends with the broker).
if ! timeout 60 grep -q -m 1 " ready on " < <(tail -n +1 -f --pid="$broker_pid" "$work/broker.log"); then
  cat "$work/broker.log"
  fail "dsb-broker did not get ready"
fi

want=$(sed -n 's/^#define DSB_VERSION_STRING "\(.*\)"$/\1/p' "$prefix/include/dsb/version.h")
for p in cmake-build/consumer_c cmake-build/consumer_cxx pc-build/consumer_c pc-build/consumer_cxx; do
  step "run $p"
  out=$(timeout 60 "$work/$p" "$work/run/dsb.sock" exch01 2>&1) || { echo "$out"; cat "$work/broker.log"; fail "$p"; }
  echo "$out"
  grep -q "ersion $want " <<<"$out" || fail "$p did not print the library version $want"
done
echo "PASS: C and C++ programs built against the installed tree (CMake and pkg-config) ran against a broker"
