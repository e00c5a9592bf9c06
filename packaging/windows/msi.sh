#!/usr/bin/env bash
# The MSI's build and check (Debian wixl and msitools; run on the build host,
# never under Wine).
#
#   msi.sh build OUT VERSION WXS CONFIG HEADERS_DIR VERSION_H BROKER DSBCTL DLL IMPLIB NETDLL
#     stages the files into OUT's folder (OUT.stage: bin, lib, include/dsb,
#     config; wixl takes only relative Source paths), runs wixl there, then
#     sets what wixl ignores: ExampleConfig's Component.Attributes to
#     64-bit (256) + Permanent (16) + NeverOverwrite (128) = 400.
#   msi.sh check MSI
#     lists the MSI's tables with msiinfo and asserts the files, components,
#     folders, the service and its control; prints what differs, exit 1.
#   msi.sh standin WORKDIR WXS CONFIG HEADERS_DIR
#     build from stand-in files (text files named like the real ones), then
#     check: tests the .wxs and this script on a build without the Windows
#     programs (the Linux build). Exit 77 (skip) without wixl or msitools.
#   msi.sh wine-install WORKDIR WXS CONFIG HEADERS_DIR
#     the stand-in MSI with a real stand-in service (test_service.c, MinGW)
#     installed and uninstalled by Wine's msiexec in WORKDIR/prefix; checks
#     files, the service entry, its start, and what the uninstall leaves.
#     Exit 77 without wine or x86_64-w64-mingw32-gcc.
set -euo pipefail

die() { echo "msi.sh: $*" >&2; exit 1; }

build() {
  [ $# -eq 11 ] || die "build: expected 11 arguments, got $#"
  local out=$1 version=$2 wxs=$3 config=$4 headers=$5 version_h=$6
  local broker=$7 dsbctl=$8 dll=$9 implib=${10} netdll=${11}
  local stage="$out.stage"
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/lib" "$stage/include/dsb" "$stage/config"
  cp "$broker" "$stage/bin/dsb-broker.exe"
  cp "$dsbctl" "$stage/bin/dsbctl.exe"
  cp "$dll" "$stage/bin/dsb.dll"
  cp "$netdll" "$stage/bin/Dsb.Net.dll"
  cp "$implib" "$stage/lib/libdsb.dll.a"
  cp "$headers/dsb.h" "$headers/errc_list.h" "$version_h" "$stage/include/dsb/"
  cp "$config" "$stage/config/dsb.toml"
  rm -f "$out"
  # wixl's GLib warnings about attributes it ignores are noise: only its exit status counts.
  (cd "$stage" && wixl -a x64 -D "Version=$version" -o "$out" "$wxs")
  msibuild "$out" -q "UPDATE \`Component\` SET \`Attributes\` = 400 WHERE \`Component\` = 'ExampleConfig'"
  echo "msi.sh: built $out"
}

failures=0
expect() {  # expect WHAT EXPECTED ACTUAL
  if [ "$2" == "$3" ]; then
    echo "ok: $1"
  else
    echo "FAIL: $1"
    echo "  expected: $2"
    echo "  actual:   $3"
    failures=$((failures + 1))
  fi
}

# The rows of TABLE without msiinfo's three header lines (names, types, key),
# sorted, CRs dropped.
rows() { msiinfo export "$1" "$2" | tail -n +4 | tr -d '\r' | LC_ALL=C sort; }

check() {
  [ $# -eq 1 ] || die "check: expected 1 argument"
  local msi=$1
  [ -f "$msi" ] || die "no MSI at $msi"
  # File: file name, its component (sizes vary, so not compared).
  expect "File table: names and components" \
    "$(printf '%s\n' 'Dsb.Net.dll DotnetWrapper' 'dsb-broker.exe Broker' 'dsb.dll ClientDll' \
      'dsb.h Headers' 'dsb.toml ExampleConfig' 'dsbctl.exe Dsbctl' 'errc_list.h Headers' \
      'libdsb.dll.a ImportLib' 'version.h Headers' | LC_ALL=C sort)" \
    "$(rows "$msi" File | awk -F'\t' '{print $3, $2}' | LC_ALL=C sort)"
  # Component: folder, attributes (256 = 64-bit; 400 = 64-bit, permanent,
  # never overwritten), key file.
  expect "Component table: folders, attributes, key paths" \
    "$(printf '%s\n' 'Broker BinDir 256 DsbBrokerExe' 'ClientDll BinDir 256 DsbDll' \
      'DotnetWrapper BinDir 256 DsbNetDll' 'Dsbctl BinDir 256 DsbctlExe' \
      'ExampleConfig DataDir 400 DsbToml' 'Headers IncludeDsbDir 256 DsbH' \
      'ImportLib LibDir 256 DsbImportLib')" \
    "$(rows "$msi" Component | awk -F'\t' '{print $1, $3, $4, $6}')"
  # Directory: each folder's full path from its parents.
  expect "Directory table: install paths" \
    "$(printf '%s\n' 'BinDir=[ProgramFiles64Folder]dsb/bin' 'DataDir=[CommonAppDataFolder]dsb' \
      'IncludeDsbDir=[ProgramFiles64Folder]dsb/include/dsb' 'LibDir=[ProgramFiles64Folder]dsb/lib')" \
    "$(rows "$msi" Directory | awk -F'\t' '
        { parent[$1] = $2; name[$1] = $3 }
        END {
          n = split("BinDir DataDir IncludeDsbDir LibDir", ids, " ")
          for (i = 1; i <= n; ++i) {
            id = ids[i]; path = ""
            while (parent[id] != "TARGETDIR" && id != "") { path = name[id] (path == "" ? "" : "/" path); id = parent[id] }
            print ids[i] "=[" id "]" path
          }
        }')"
  # ServiceInstall: name, type 16 (own process), start 2 (auto), error
  # control 1 (normal), no account (LocalSystem), the command line, component.
  expect "ServiceInstall: dsb-broker, own process, auto start, LocalSystem, its arguments" \
    'DsbBrokerService|dsb-broker|16|2|1||--service --service-name dsb-broker --config "[CommonAppDataFolder]dsb\dsb.toml"|Broker' \
    "$(rows "$msi" ServiceInstall | awk -F'\t' '{print $1 "|" $2 "|" $4 "|" $5 "|" $6 "|" $9 "|" $11 "|" $12}')"
  # ServiceControl: events 163 = start on install (1) + stop on install (2)
  # + stop on uninstall (32) + delete on uninstall (128); wait 1.
  expect "ServiceControl: start on install, stop on both, delete on uninstall, wait" \
    'DsbBrokerControl|dsb-broker|163|1|Broker' \
    "$(rows "$msi" ServiceControl | awk -F'\t' '{print $1 "|" $2 "|" $3 "|" $5 "|" $6}')"
  # The actions that act on the service are in the install sequence.
  expect "InstallExecuteSequence: service actions" \
    "$(printf '%s\n' DeleteServices InstallServices StartServices StopServices)" \
    "$(rows "$msi" InstallExecuteSequence | awk -F'\t' '$1 ~ /Services$/ {print $1}')"
  if [ "$failures" -ne 0 ]; then
    echo "msi.sh: $failures check(s) of $msi failed"
    exit 1
  fi
  echo "msi.sh: $msi has the expected contents"
}

standin() {
  [ $# -eq 4 ] || die "standin: expected 4 arguments"
  local work=$1 wxs=$2 config=$3 headers=$4
  for tool in wixl msiinfo msibuild; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not found (Debian packages wixl, msitools)"; exit 77; }
  done
  rm -rf "$work"
  mkdir -p "$work/in"
  local f
  for f in dsb-broker.exe dsbctl.exe dsb.dll Dsb.Net.dll libdsb.dll.a version.h; do
    echo "stand-in for $f" >"$work/in/$f"
  done
  build "$work/dsb.msi" 0.1.0 "$wxs" "$config" "$headers" "$work/in/version.h" \
    "$work/in/dsb-broker.exe" "$work/in/dsbctl.exe" "$work/in/dsb.dll" "$work/in/libdsb.dll.a" \
    "$work/in/Dsb.Net.dll" >"$work/build.log" 2>&1 || { cat "$work/build.log"; die "the build failed"; }
  check "$work/dsb.msi"
}

# Installs an MSI built around a stand-in service (test_service.c) with
# Wine's msiexec in a prefix of its own, checks the files, the service entry
# and the command line the service was started with, uninstalls, checks that
# the files and the service are gone and the config stays. What this shows is
# Wine's Windows Installer and service manager, not Windows' (see docs/windows.md).
wine_install() {
  [ $# -eq 4 ] || die "wine-install: expected 4 arguments"
  local work=$1 wxs=$2 config=$3 headers=$4
  local tool
  for tool in wixl msiinfo msibuild wine x86_64-w64-mingw32-gcc; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
  done
  rm -rf "$work"
  mkdir -p "$work/in"
  x86_64-w64-mingw32-gcc -O1 -static -Wall -Wextra -Werror -o "$work/in/dsb-broker.exe" \
    "$(dirname "$0")/test_service.c"
  local f
  for f in dsbctl.exe dsb.dll Dsb.Net.dll libdsb.dll.a version.h; do
    echo "stand-in for $f" >"$work/in/$f"
  done
  build "$work/dsb.msi" 0.1.0 "$wxs" "$config" "$headers" "$work/in/version.h" \
    "$work/in/dsb-broker.exe" "$work/in/dsbctl.exe" "$work/in/dsb.dll" "$work/in/libdsb.dll.a" \
    "$work/in/Dsb.Net.dll" >"$work/build.log" 2>&1 || { cat "$work/build.log"; die "the build failed"; }
  export WINEPREFIX="$work/prefix" WINEDEBUG=-all
  # However the test ends: end only this prefix's wineserver (and what runs
  # in it), then drop the prefix (hundreds of MB; the logs stay in $work).
  trap 'wineserver -k >/dev/null 2>&1 || true; rm -rf "$WINEPREFIX"' EXIT
  local c="$WINEPREFIX/drive_c"
  timeout 600 wine msiexec /i "$work/dsb.msi" /qn /l*v "$work/install.log" ||
    die "msiexec /i failed (log: $work/install.log)"
  local installed
  installed=$(cd "$c" && find "Program Files/dsb" ProgramData/dsb -type f | LC_ALL=C sort)
  expect "installed files" "$(printf '%s\n' 'Program Files/dsb/bin/Dsb.Net.dll' \
    'Program Files/dsb/bin/dsb-broker.exe' 'Program Files/dsb/bin/dsb.dll' \
    'Program Files/dsb/bin/dsbctl.exe' 'Program Files/dsb/include/dsb/dsb.h' \
    'Program Files/dsb/include/dsb/errc_list.h' 'Program Files/dsb/include/dsb/version.h' \
    'Program Files/dsb/lib/libdsb.dll.a' 'ProgramData/dsb/dsb.toml' | LC_ALL=C sort)" "$installed"
  local key='HKLM\System\CurrentControlSet\Services\dsb-broker'
  local entry
  entry=$(wine reg query "$key" 2>&1 | tr -d '\r' | awk '$2 ~ /^REG_/ {v = $3; for (i = 4; i <= NF; ++i) v = v " " $i; print $1 "=" v}' | LC_ALL=C sort)
  expect "service entry: start auto, own process, LocalSystem" \
    "$(printf '%s\n' 'ObjectName=LocalSystem' 'Start=0x2' 'Type=0x10')" \
    "$(echo "$entry" | grep -E '^(ObjectName|Start|Type)=')"
  expect "service entry: its command line names the config in ProgramData" \
    'ImagePath=C:\Program Files\dsb\bin\dsb-broker.exe --service --service-name dsb-broker --config "C:\ProgramData\dsb\dsb.toml"' \
    "$(echo "$entry" | grep '^ImagePath=')"
  expect "the service was started with that command line" \
    '"C:\Program Files\dsb\bin\dsb-broker.exe" --service --service-name dsb-broker --config "C:\ProgramData\dsb\dsb.toml"' \
    "$(tr -d '\r' <"$c/dsb-svc-args.txt" 2>/dev/null)"
  timeout 600 wine msiexec /x "$work/dsb.msi" /qn /l*v "$work/uninstall.log" ||
    die "msiexec /x failed (log: $work/uninstall.log)"
  expect "after the uninstall only the config is left" "ProgramData/dsb/dsb.toml" \
    "$(cd "$c" && find "Program Files/dsb" ProgramData/dsb -type f 2>/dev/null | LC_ALL=C sort)"
  expect "after the uninstall the service is gone" "absent" \
    "$(wine reg query "$key" >/dev/null 2>&1 && echo present || echo absent)"
  if [ "$failures" -ne 0 ]; then
    echo "msi.sh: $failures check(s) of the install under Wine failed (logs in $work)"
    exit 1
  fi
  echo "msi.sh: installed and uninstalled under Wine as expected"
}

cmd=${1:-}
shift || true
case "$cmd" in
  build) build "$@" ;;
  check) check "$@" ;;
  standin) standin "$@" ;;
  wine-install) wine_install "$@" ;;
  *) die "usage: msi.sh build|check|standin|wine-install ..." ;;
esac
