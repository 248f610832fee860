# dcp_add_library(<target> EXPORT_NAME <name> SOURCES <src>...
#                 [PUBLIC <lib>...] [PRIVATE <lib>...])
#
# One of dcp++'s installed libraries, from one compilation of its sources:
#
#   <target>_objects   OBJECT library: the sources, compiled once, position
#                      independent, with hidden visibility (only what
#                      dcp/export.h marks is exported), DCP_<NAME>_BUILDING
#                      defined (<NAME>: EXPORT_NAME in capitals) and the
#                      project's warnings. The caller's compile settings
#                      (precompiled headers, definitions, private include
#                      directories) go on this target.
#   <target>           the versioned shared library of those objects, exported
#                      and aliased as dcp::<name> (the same name for
#                      find_package(dcp) and add_subdirectory), with the
#                      include/ folder next to the calling CMakeLists.txt as its
#                      public headers, installed into the dcpTargets export set
#                      when DCP_INSTALL is on.
#   <target>_internal  a static library of the same objects, with src/ as an
#                      include directory as well: for tests of internals
#                      (namespace dcp::internal, hidden in <target>). Built only
#                      when something links it. A program links it instead of
#                      <target>, and with nothing that links <target> (two
#                      copies of the library in one process).
#
# PUBLIC and PRIVATE are link dependencies as for target_link_libraries: both
# are given to the objects (their include directories and definitions) and to
# the libraries (their link).
function(dcp_add_library target)
  cmake_parse_arguments(ARG "" "EXPORT_NAME" "SOURCES;PUBLIC;PRIVATE" ${ARGN})
  if(NOT ARG_EXPORT_NAME OR NOT ARG_SOURCES OR ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "dcp_add_library(${target}): takes EXPORT_NAME <name> SOURCES <src>... "
                        "[PUBLIC <lib>...] [PRIVATE <lib>...]; unexpected: '${ARG_UNPARSED_ARGUMENTS}'")
  endif()
  string(TOUPPER "${ARG_EXPORT_NAME}" upper)
  set(objects ${target}_objects)
  set(public_headers ${CMAKE_CURRENT_SOURCE_DIR}/include)

  add_library(${objects} OBJECT ${ARG_SOURCES})
  set_target_properties(${objects} PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  target_compile_features(${objects} PUBLIC cxx_std_17)
  target_compile_definitions(${objects} PRIVATE DCP_${upper}_BUILDING)
  target_include_directories(${objects} PUBLIC $<BUILD_INTERFACE:${public_headers}>)
  target_compile_options(${objects} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_link_libraries(${objects} PUBLIC ${ARG_PUBLIC} PRIVATE ${ARG_PRIVATE})

  add_library(${target} SHARED $<TARGET_OBJECTS:${objects}>)
  add_library(dcp::${ARG_EXPORT_NAME} ALIAS ${target})
  set_target_properties(${target} PROPERTIES
    EXPORT_NAME ${ARG_EXPORT_NAME}
    OUTPUT_NAME ${target}
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${public_headers}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC} PRIVATE ${ARG_PRIVATE})

  add_library(${target}_internal STATIC EXCLUDE_FROM_ALL $<TARGET_OBJECTS:${objects}>)
  target_compile_features(${target}_internal PUBLIC cxx_std_17)
  target_include_directories(${target}_internal PUBLIC
    ${public_headers} ${CMAKE_CURRENT_SOURCE_DIR}/src)
  # PRIVATE: a static library passes them on for linking only.
  target_link_libraries(${target}_internal PUBLIC ${ARG_PUBLIC} PRIVATE ${ARG_PRIVATE})

  if(DCP_INSTALL)
    install(TARGETS ${target} EXPORT dcpTargets
      LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
      ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
      INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  endif()
endfunction()

# dcp_make_imported_global(<target>...)
#
# Makes the imported targets that <target>s link, directly or through each
# other (named plainly or in $<TARGET_FILE:...>, $<TARGET_PROPERTY:...,...>,
# $<LINK_ONLY:...>), global, when they were created in this directory.
# Imported targets are directory-scoped, and LibTorch's name each other in
# generator expressions evaluated where the final program links: with
# dcp++ as a subproject, that is in the parent's directories, which must see
# torch, torch_cpu, c10 and their dependencies. (CMake 3.24 can do this with
# CMAKE_FIND_PACKAGE_TARGETS_GLOBAL; the minimum here is 3.18.)
function(dcp_make_imported_global)
  set(queue ${ARGN})
  set(seen)
  while(queue)
    list(POP_FRONT queue target)
    if(target IN_LIST seen OR NOT TARGET ${target})
      continue()
    endif()
    list(APPEND seen ${target})
    get_target_property(imported ${target} IMPORTED)
    get_target_property(global ${target} IMPORTED_GLOBAL)
    get_target_property(dir ${target} SOURCE_DIR)
    if(imported AND NOT global AND dir STREQUAL CMAKE_CURRENT_SOURCE_DIR)
      set_target_properties(${target} PROPERTIES IMPORTED_GLOBAL TRUE)
    endif()
    get_target_property(links ${target} INTERFACE_LINK_LIBRARIES)
    if(NOT links)
      continue()
    endif()
    foreach(item IN LISTS links)
      # Target names inside generator expressions, then the item itself.
      string(REGEX MATCHALL "\\$<(TARGET_FILE|TARGET_PROPERTY|LINK_ONLY|TARGET_LINKER_FILE):[^,>]+"
             named "${item}")
      foreach(n IN LISTS named)
        string(REGEX REPLACE "^\\$<[A-Z_]+:" "" n "${n}")
        list(APPEND queue ${n})
      endforeach()
      if(NOT item MATCHES "[$<>]")
        list(APPEND queue ${item})
      endif()
    endforeach()
  endwhile()
endfunction()
