# The status page (broker/http/status_page.h, docs/status-page.md), part of
# dsb::broker_core: its routes and sampler, the History ring, and the page's
# HTML (status.html) embedded at build time by embed.cmake (rebuilt when the
# page changes). Included from broker/CMakeLists.txt after core.cmake.
set(dsb_page_html ${CMAKE_CURRENT_LIST_DIR}/status.html)
set(dsb_page_cc ${CMAKE_CURRENT_BINARY_DIR}/status_page_html.cc)
add_custom_command(OUTPUT ${dsb_page_cc}
  COMMAND ${CMAKE_COMMAND} -DIN=${dsb_page_html} -DOUT=${dsb_page_cc} -DNAME=kStatusPageHtml
    -DNAMESPACE=dsb::broker -P ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
  DEPENDS ${dsb_page_html} ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
  COMMENT "Embedding the status page (status.html)" VERBATIM)
# The page's pure parts (its policy, the History ring, the embedded HTML) in
# a library of their own, so their unit tests link without the whole broker.
add_library(dsb_status_page_parts STATIC
  ${PROJECT_SOURCE_DIR}/broker/history.cc
  ${PROJECT_SOURCE_DIR}/broker/http/status_page_csp.cc
  ${dsb_page_cc})
add_library(dsb::status_page_parts ALIAS dsb_status_page_parts)
dsb_include_root(dsb_status_page_parts PUBLIC broker/history.h broker/http/status_page_csp.h)
target_link_libraries(dsb_status_page_parts PUBLIC dsb::common Boost::json
  PRIVATE dsb::crypto dsb::warnings)

target_sources(dsb_broker_core PRIVATE ${PROJECT_SOURCE_DIR}/broker/http/status_page.cc)
target_link_libraries(dsb_broker_core PUBLIC dsb::status_page_parts PRIVATE dsb::http)
