#!/usr/bin/env bash
# The installed libraries' binary interface is what is documented:
#  - libdsb.so: SONAME libdsb.so.<major>; exports exactly the symbols of
#    client/dsb.symbols, which are exactly the DSB_API functions of dsb.h;
#    needs no Boost (or other non-system) shared library.
#  - libdsb-client.so: SONAME libdsb-client.so.<major>; exports exactly the
#    (demangled) symbols of client/dsb-client.symbols, the public dsb:: C++
#    API of client.h picked by client/dsb-client.map; needs no Boost.
# Usage: abi_check.sh BUILD_DIR CMAKE SOURCE_DIR MAJOR
set -euo pipefail
build=$1 cmake=$2 src=$3 major=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$cmake" --install "$build" --prefix "$work/prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install $build"; }
lib=$(find "$work/prefix" -name "libdsb.so.$major" -printf '%h\n' | head -n 1)
[ -n "$lib" ] || fail "libdsb.so.$major not installed"

grep -E '^dsb_[a-z0-9_]+$' "$src/client/dsb.symbols" | sort >"$work/documented"
[ -s "$work/documented" ] || fail "client/dsb.symbols lists no symbol"
sed -n 's/^DSB_API [^(]*[ *]\(dsb_[a-z0-9_]*\)(.*/\1/p' "$work/prefix/include/dsb/dsb.h" |
  sort >"$work/declared"
diff -u "$work/documented" "$work/declared" >"$work/diff" ||
  { cat "$work/diff"; fail "client/dsb.symbols (-) and the DSB_API functions of dsb.h (+) differ"; }

for so in "libdsb.so.$major" "libdsb-client.so.$major"; do
  soname=$(readelf -d "$lib/$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ "$soname" = "$so" ] || fail "$so has SONAME '$soname'"
  if readelf -d "$lib/$so" | grep -E 'NEEDED.*\[lib(boost|spdlog|fmt|ssl|crypto|toml)'; then
    fail "$so needs a shared library a client machine should not need"
  fi
  readelf -d "$lib/$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
    grep -v -E '^(libstdc\+\+\.so|libgcc_s\.so|libc\.so|libm\.so|ld-linux|libasan|libubsan|libtsan)' &&
    fail "$so needs a library besides libstdc++, libgcc_s, libc and libm"
  echo "$so: SONAME $soname, NEEDED: $(readelf -d "$lib/$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
done

nm -D --defined-only --format=posix "$lib/libdsb.so.$major" | awk '{print $1}' | sort >"$work/exported"
diff -u "$work/documented" "$work/exported" >"$work/diff" ||
  { cat "$work/diff"; fail "libdsb.so exports (+) other than client/dsb.symbols (-)"; }
echo "libdsb.so exports exactly the $(wc -l <"$work/documented") documented symbols"

# Demangled, as the list is; the names hold spaces, so one a line.
grep -v -E '^(#|$)' "$src/client/dsb-client.symbols" | LC_ALL=C sort >"$work/cxx_documented"
[ -s "$work/cxx_documented" ] || fail "client/dsb-client.symbols lists no symbol"
nm -D -C --defined-only "$lib/libdsb-client.so.$major" | cut -d' ' -f3- | LC_ALL=C sort -u >"$work/cxx"
diff -u "$work/cxx_documented" "$work/cxx" >"$work/diff" ||
  { cat "$work/diff"; fail "libdsb-client.so exports (+) other than client/dsb-client.symbols (-)"; }
echo "libdsb-client.so exports exactly the $(wc -l <"$work/cxx") symbols of client/dsb-client.symbols"
echo "PASS"
