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
install(FILES ${PROJECT_SOURCE_DIR}/CHANGELOG.md
  DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/dsb COMPONENT service EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME dsb)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "dsb maintainers <dsb@localhost>")
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
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${_dsb_pkg}/debian/postinst ${_dsb_pkg}/debian/prerm ${_dsb_pkg}/debian/postrm
  ${_dsb_pkg}/debian/conffiles ${_dsb_pkg}/debian/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
