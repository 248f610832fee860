# dcp_add_library(<target> EXPORT_NAME <name> SOURCES <src>...)
#
# One of dcp++'s installed libraries: a versioned shared library <target>,
# exported and aliased as dcp::<name>, with the include/ folder next to the
# calling CMakeLists.txt as its public headers, the project's warnings, and
# installed into the dcpTargets export set. Links, definitions and
# precompiled headers stay with the caller.
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
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  install(TARGETS ${target} EXPORT dcpTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endfunction()
