# The discovered limit with an etcd ledger (lane "limits", docs/etcd.md
# "Limits with an etcd ledger"): the stored records and the keeper's bound on
# what dsb held at a refusal (limit_records.h; pure, no I/O).
add_library(dsb_limit_records STATIC ${CMAKE_CURRENT_LIST_DIR}/limit_records.cc)
add_library(dsb::limit_records ALIAS dsb_limit_records)
dsb_include_root(dsb_limit_records PUBLIC broker/etcd/limit_records.h)
target_link_libraries(dsb_limit_records PUBLIC dsb::lease dsb::common PRIVATE Boost::json
  dsb::warnings)
# The limit keeper on etcd (etcd_limits.h), used by the broker's etcd mode
# (etcd/etcd_node.cc).
target_sources(dsb_broker_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/etcd_limits.cc)
target_link_libraries(dsb_broker_core PUBLIC dsb::limit_records dsb::etcd_client)
