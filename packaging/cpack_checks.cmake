# Read by cpack before it makes a package (CPACK_PROJECT_CONFIG_FILE, set in
# cmake/packaging.cmake): refuses what must not be shipped.
#
# The unit (dsb-broker.service) is Type=notify: systemd waits for READY=1 and,
# without it, kills the broker when the start timeout runs out. A build whose
# broker was made without libsystemd sends nothing (broker/CMakeLists.txt).
if(NOT CPACK_DSB_BROKER_SD_NOTIFY)
  message(FATAL_ERROR
    "dsb: this build's dsb-broker has no sd_notify (libsystemd was not found when it was "
    "configured), so the package's Type=notify unit would time out and kill it. Install "
    "libsystemd-dev (and pkg-config), configure this build folder again and rebuild.")
endif()
