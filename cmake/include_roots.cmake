# Per-library include roots: the build enforces the layering of DESIGN section 4.
#
# Includes are rooted at the repository ("shm/slot_table.h"), but exporting the
# repository itself as an include folder lets any target include anything (shm
# could include broker headers). Instead each library gets a folder of its own,
# <build>/include_roots/<target>, holding symbolic links to only the source
# folders or headers it owns:
#   include_roots/dsb_shm/shm -> <source>/shm
#   include_roots/dsb_secure_fs/broker/secure_fs.h -> <source>/broker/secure_fs.h
# and that folder is the library's include directory (PUBLIC: its users see it
# too, as target_link_libraries passes it on). A target can therefore include
# its own headers and those of what it links, nothing else; the compiler says
# "No such file" for the rest. No source file moves.
#
# A path with ".." ("shm/../broker/target.h") would climb out of the root
# through the link into the repository and reach anything: the test
# include_no_dotdot (cmake/check_includes.cmake) fails on any #include holding
# ".." in common, shm, client, broker, tools and tests.
#
# Remaining leak (a compiler rule, not ours): a quoted include is first looked
# up beside the including file, so "x.h" finds a sibling header in the same
# source folder. Repository-rooted includes never rely on that.

set(DSB_INCLUDE_ROOTS ${CMAKE_BINARY_DIR}/include_roots)

# dsb_include_root(<target> <PUBLIC|PRIVATE|INTERFACE> <path>...)
# Links each repository-relative <path> (a folder or a header) into the
# target's include root and adds that root to the target's include folders.
# Only build-tree usage: installed headers come from client/include.
function(dsb_include_root target scope)
  set(root ${DSB_INCLUDE_ROOTS}/${target})
  # Rebuilt at each configure so a path removed from the list stops being
  # reachable (REMOVE_RECURSE deletes the links, never what they point to).
  file(REMOVE_RECURSE ${root})
  foreach(path ${ARGN})
    if(NOT EXISTS ${PROJECT_SOURCE_DIR}/${path})
      message(FATAL_ERROR "dsb_include_root(${target}): ${path} does not exist")
    endif()
    get_filename_component(parent ${root}/${path} DIRECTORY)
    file(MAKE_DIRECTORY ${parent})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/${path} ${root}/${path} SYMBOLIC)
  endforeach()
  target_include_directories(${target} ${scope} $<BUILD_INTERFACE:${root}>)
endfunction()
