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
  ${CMAKE_CURRENT_LIST_DIR}/admin_rights.cc
  ${CMAKE_CURRENT_LIST_DIR}/broker.cc
  ${CMAKE_CURRENT_LIST_DIR}/capacity.cc
  ${CMAKE_CURRENT_LIST_DIR}/clients.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster_agent.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster_admin.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster_gate.cc
  ${CMAKE_CURRENT_LIST_DIR}/file_limit.cc
  ${CMAKE_CURRENT_LIST_DIR}/local_server.cc
  ${CMAKE_CURRENT_LIST_DIR}/metrics_collect.cc
  ${CMAKE_CURRENT_LIST_DIR}/peer_access.cc
  ${CMAKE_CURRENT_LIST_DIR}/cluster_state.cc
  ${CMAKE_CURRENT_LIST_DIR}/limit_keeper.cc
  ${CMAKE_CURRENT_LIST_DIR}/listen.cc
  ${CMAKE_CURRENT_LIST_DIR}/log_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/owner_records.cc
  ${CMAKE_CURRENT_LIST_DIR}/reload.cc
  ${CMAKE_CURRENT_LIST_DIR}/shutdown.cc
  ${CMAKE_CURRENT_LIST_DIR}/start_checks.cc
  ${CMAKE_CURRENT_LIST_DIR}/startup.cc
  ${CMAKE_CURRENT_LIST_DIR}/state_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/state_policy.cc
  ${CMAKE_CURRENT_LIST_DIR}/target.cc)
add_library(dsb::broker_core ALIAS dsb_broker_core)
# Unity batches (DSB_UNITY_BUILD): each of these units instantiates much the same Asio,
# Beast and spdlog code; compiled in batches of 8 they share it (the library's units took
# 234 CPU-s one by one, 76 CPU-s in four batches, release preset). GCC's subobject-linkage
# warning fires in a unity batch for every coroutine of a unit with an unnamed namespace
# (the unit is then an included file, not the main file): off for the batches only.
if(DSB_UNITY_BUILD)
  set_target_properties(dsb_broker_core PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 8)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(dsb_broker_core PRIVATE -Wno-subobject-linkage)
  endif()
endif()
# ClusterNode's etcd mode (ledger = "etcd"): the broker's side of the ledger in
# etcd (etcd/etcd_ledger.h) and the node that uses it (etcd/etcd_node.h).
target_sources(dsb_broker_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/etcd/etcd_ledger.cc
  ${CMAKE_CURRENT_LIST_DIR}/etcd/etcd_node.cc)
target_link_libraries(dsb_broker_core PUBLIC dsb::etcd_client dsb::etcd_check)
# The one-broker lock (instance_lock.h): flock on POSIX, a file opened
# without write sharing on Windows.
if(WIN32)
  target_sources(dsb_broker_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/instance_lock_win.cc)
else()
  target_sources(dsb_broker_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/instance_lock_posix.cc)
endif()
# Running a limit_command (limit_command.h): posix_spawn of /bin/sh; refused
# on Windows (limit_command_win.cc, and at the start: start_checks.cc). A library of its
# own so its suite (limit_command_test, also under tsan) does not build the broker's.
if(WIN32)
  set(limit_command_os ${CMAKE_CURRENT_LIST_DIR}/limit_command_win.cc)
else()
  set(limit_command_os ${CMAKE_CURRENT_LIST_DIR}/limit_command_posix.cc)
endif()
add_library(dsb_limit_command STATIC ${CMAKE_CURRENT_LIST_DIR}/limit_command.cc
  ${limit_command_os})
add_library(dsb::limit_command ALIAS dsb_limit_command)
dsb_include_root(dsb_limit_command PUBLIC broker/limit_command.h)
target_link_libraries(dsb_limit_command PUBLIC dsb::common dsb::asio PRIVATE dsb::config
  dsb::warnings)
target_link_libraries(dsb_broker_core PUBLIC dsb::limit_command)
# A local peer's credentials (peer_access.h): SO_PEERCRED on POSIX; on
# Windows the pipe's client process and its token, and the named pipe itself
# (dsb::local_pipe_server, common/local_frame_server_win.h).
if(WIN32)
  target_sources(dsb_broker_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/peer_access_win.cc)
  target_link_libraries(dsb_broker_core PUBLIC dsb::local_pipe_server)
else()
  target_sources(dsb_broker_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/peer_access_posix.cc)
endif()
dsb_include_root(dsb_broker_core PUBLIC broker)
target_link_libraries(dsb_broker_core
  PUBLIC dsb::common dsb::limited_log dsb::shm dsb::config dsb::lease dsb::cluster_lease
    dsb::local_request
    dsb::wire dsb::http dsb::metrics dsb::secure_fs dsb::broker_service spdlog::spdlog
  PRIVATE dsb::asio Boost::json dsb::crypto dsb::version dsb::warnings)

add_executable(dsb-broker ${CMAKE_CURRENT_LIST_DIR}/main.cc)
target_link_libraries(dsb-broker PRIVATE dsb::broker_core CLI11::CLI11 spdlog::spdlog dsb::warnings)
include(GNUInstallDirs)
install(TARGETS dsb-broker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
