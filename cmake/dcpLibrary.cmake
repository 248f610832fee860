# dcp_add_library(<target> EXPORT_NAME <name> SOURCES <src>...)
#
# One of dcp++'s installed libraries: a versioned shared library <target>,
# exported and aliased as dcp::<name>, with the include/ folder next to the
# calling CMakeLists.txt as its public headers, the project's warnings, and
# installed into the dcpTargets export set (when DCP_INSTALL is on), and
# requiring C++17 of whoever links it. Links, definitions and precompiled
# headers stay with the caller.
function(dcp_add_library target)
  cmake_parse_arguments(ARG "" "EXPORT_NAME" "SOURCES" ${ARGN})
  if(NOT ARG_EXPORT_NAME OR NOT ARG_SOURCES OR ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "dcp_add_library(${target}): takes EXPORT_NAME <name> SOURCES <src>...; "
                        "unexpected: '${ARG_UNPARSED_ARGUMENTS}'")
  endif()
  add_library(${target} SHARED ${ARG_SOURCES})
  add_library(dcp::${ARG_EXPORT_NAME} ALIAS ${target})
  set_target_properties(${target} PROPERTIES
    EXPORT_NAME ${ARG_EXPORT_NAME}
    OUTPUT_NAME ${target}
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
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
