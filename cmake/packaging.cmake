# The Debian package: `cpack -G DEB` in a build folder (or `tools/run package`)
# makes dsb_<version>_<arch>.deb from what `cmake --install` puts (broker,
# dsbctl, the library, headers, CMake package, dsb.pc) plus the service's
# files below. Included at the end of the top-level CMakeLists.txt, after every
# install() rule (CPack lists the install components it finds then).
#
# The service's files go into a component of their own, "service", excluded
# from a plain `cmake --install --prefix DIR`: the unit, tmpfiles.d and
# sysusers.d entries only make sense under /usr, and /etc/dsb/dsb.toml is an
# absolute path that would otherwise be written outside DIR. CPack asks for it.
include(GNUInstallDirs)

set(_dsb_pkg ${PROJECT_SOURCE_DIR}/packaging)
install(FILES ${_dsb_pkg}/dsb-broker.service
  DESTINATION lib/systemd/system COMPONENT service EXCLUDE_FROM_ALL)
install(FILES ${_dsb_pkg}/tmpfiles.conf RENAME dsb.conf
  DESTINATION lib/tmpfiles.d COMPONENT service EXCLUDE_FROM_ALL)
install(FILES ${_dsb_pkg}/sysusers.conf RENAME dsb.conf
  DESTINATION lib/sysusers.d COMPONENT service EXCLUDE_FROM_ALL)
# A conffile (packaging/debian/conffiles): dpkg keeps the operator's edits.
install(FILES ${_dsb_pkg}/dsb.toml DESTINATION /etc/dsb COMPONENT service EXCLUDE_FROM_ALL)
install(FILES ${_dsb_pkg}/README.md
  DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/dsb COMPONENT service EXCLUDE_FROM_ALL)
# Debian policy 12.5: every package carries its copyright and license there.
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE RENAME copyright
  DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/dsb COMPONENT service EXCLUDE_FROM_ALL)
# The changelog as Debian policy 12.7 wants it: changelog.gz, compressed with
# gzip -9n (-n: no name or time stamp in the gzip header). One entry in
# Debian's format (dpkg-parsechangelog, lintian), then CHANGELOG.md after the
# "Old Changelog:" line that parsers stop at. The entry's date: now, or
# SOURCE_DATE_EPOCH for a reproducible build. Configured again when
# CHANGELOG.md changes.
set(_dsb_contact "dsb maintainers <dsb-maintainers@users.noreply.github.com>")
set(_dsb_gen ${PROJECT_BINARY_DIR}/packaging)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/CHANGELOG.md)
file(READ ${PROJECT_SOURCE_DIR}/CHANGELOG.md _dsb_changes)
string(TIMESTAMP _dsb_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
file(WRITE ${_dsb_gen}/changelog
  "dsb (${PROJECT_VERSION}) unstable; urgency=medium\n\n"
  "  * Built from the project's sources; its changes are in CHANGELOG.md, below.\n\n"
  " -- ${_dsb_contact}  ${_dsb_date}\n\n"
  "Old Changelog:\n${_dsb_changes}")
# The manual pages (packaging/*.8), gzipped the same way into usr/share/man/man8.
set(_dsb_man)
foreach(page dsb-broker.8 dsbctl.8)
  configure_file(${_dsb_pkg}/${page} ${_dsb_gen}/${page} COPYONLY)
  list(APPEND _dsb_man ${_dsb_gen}/${page}.gz)
endforeach()
foreach(plain changelog dsb-broker.8 dsbctl.8)
  execute_process(COMMAND gzip -9nf ${_dsb_gen}/${plain} RESULT_VARIABLE _dsb_gz)
  if(NOT _dsb_gz EQUAL 0)
    message(FATAL_ERROR "gzip -9nf ${_dsb_gen}/${plain} failed (${_dsb_gz})")
  endif()
endforeach()
install(FILES ${_dsb_gen}/changelog.gz
  DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/dsb COMPONENT service EXCLUDE_FROM_ALL)
install(FILES ${_dsb_man}
  DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT service EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME dsb)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${_dsb_contact}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}: share a server's per-account session limit")
set(CPACK_PACKAGE_DESCRIPTION "dsb-broker hands out session slots to DigiScope instances so\n\
that all of them together never exceed the server account's session limit, and\n\
brokers on several machines share one limit through leases. With dsbctl, the\n\
client library (libdsb, C ABI) and its headers, a systemd unit\n\
(dsb-broker.service) and an example /etc/dsb/dsb.toml.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
# One package holding every component (the service's included).
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
get_cmake_property(CPACK_COMPONENTS_ALL COMPONENTS)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # dsb_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends: the shared libraries' packages (dpkg-shlibdeps, from dpkg-dev), and
# who makes the user dsb (postinst prefers systemd-sysusers, else adduser).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd-sysusers | adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd")
# A shlibs file for libdsb, so programs built against it get a Depends on this
# package; the ldconfig trigger (debian/triggers) updates the loader's cache.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
# "libdsb 0 dsb (>= <version>)": a later 0.y only adds to the ABI (the SONAME
# promise, CHANGELOG.md), so a program built against this version runs with
# any later one; "=" (CPack's default) would block every upgrade.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${_dsb_pkg}/debian/postinst ${_dsb_pkg}/debian/prerm ${_dsb_pkg}/debian/postrm
  ${_dsb_pkg}/debian/conffiles ${_dsb_pkg}/debian/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# The unit is Type=notify: a broker without sd_notify would be killed when
# systemd's start timeout runs out. cpack reads CPACK_* variables from
# CPackConfig.cmake; packaging/cpack_checks.cmake refuses when this is OFF.
get_property(_dsb_sd_notify GLOBAL PROPERTY DSB_BROKER_SD_NOTIFY)
if(TARGET dsb-broker AND NOT _dsb_sd_notify)
  set(CPACK_DSB_BROKER_SD_NOTIFY OFF)
else()
  set(CPACK_DSB_BROKER_SD_NOTIFY ON)
endif()
set(CPACK_PROJECT_CONFIG_FILE ${_dsb_pkg}/cpack_checks.cmake)

include(CPack)
