# The cluster file's lease configs (cluster_lease.h); also linked by config_parse_fuzz.
add_library(dsb_cluster_lease STATIC ${CMAKE_CURRENT_LIST_DIR}/cluster_lease.cc)
add_library(dsb::cluster_lease ALIAS dsb_cluster_lease)
dsb_include_root(dsb_cluster_lease PUBLIC broker/cluster_lease.h)
target_link_libraries(dsb_cluster_lease PUBLIC dsb::config dsb::lease PRIVATE dsb::warnings)

# The local socket's request parser (local_request.h); also linked by local_request_fuzz.
add_library(dsb_local_request STATIC ${CMAKE_CURRENT_LIST_DIR}/local_request.cc)
add_library(dsb::local_request ALIAS dsb_local_request)
dsb_include_root(dsb_local_request PUBLIC broker/local_request.h)
target_link_libraries(dsb_local_request PUBLIC dsb::common PRIVATE dsb::config Boost::json
  dsb::warnings)

# dsb::broker_core: everything of the daemon but main().
add_library(dsb_broker_core STATIC
  ${CMAKE_CURRENT_LIST_DIR}/accept_guard.cc
  ${CMAKE_CURRENT_LIST_DIR}/admin.cc
  ${CMAKE_CURRENT_LIST_DIR}/broker.cc
  ${CMAKE_CURRENT_LIST_DIR}/capacity.cc
  ${CMAKE_CURRENT_LIST_DIR}/clients.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster_gate.cc
  ${CMAKE_CURRENT_LIST_DIR}/file_limit.cc
  ${CMAKE_CURRENT_LIST_DIR}/local_server.cc
  ${CMAKE_CURRENT_LIST_DIR}/peer_access.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster_state.cc
  ${CMAKE_CURRENT_LIST_DIR}/instance_lock.cc
  ${CMAKE_CURRENT_LIST_DIR}/limit_command.cc
  ${CMAKE_CURRENT_LIST_DIR}/limit_keeper.cc
  ${CMAKE_CURRENT_LIST_DIR}/listen.cc
  ${CMAKE_CURRENT_LIST_DIR}/log_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/owner_records.cc
  ${CMAKE_CURRENT_LIST_DIR}/shutdown.cc
  ${CMAKE_CURRENT_LIST_DIR}/start_checks.cc
  ${CMAKE_CURRENT_LIST_DIR}/startup.cc
  ${CMAKE_CURRENT_LIST_DIR}/state_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/state_policy.cc
  ${CMAKE_CURRENT_LIST_DIR}/target.cc)
add_library(dsb::broker_core ALIAS dsb_broker_core)
dsb_include_root(dsb_broker_core PUBLIC broker)
target_link_libraries(dsb_broker_core
  PUBLIC dsb::common dsb::limited_log dsb::shm dsb::config dsb::lease dsb::cluster_lease
    dsb::local_request
    dsb::wire dsb::secure_fs spdlog::spdlog
  PRIVATE dsb::asio Boost::json dsb::warnings)

add_executable(dsb-broker ${CMAKE_CURRENT_LIST_DIR}/main.cc)
target_link_libraries(dsb-broker PRIVATE dsb::broker_core CLI11::CLI11 spdlog::spdlog dsb::warnings)
include(GNUInstallDirs)
install(TARGETS dsb-broker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
