# Finds what dcp++ builds against. Also used by dcpConfig.cmake after install.
find_package(Torch REQUIRED)
find_package(TBB REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)

if(NOT TARGET dcp_xxhash)
  find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
  find_library(XXHASH_LIBRARY xxhash REQUIRED)
  add_library(dcp_xxhash INTERFACE IMPORTED)
  set_target_properties(dcp_xxhash PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${XXHASH_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES ${XXHASH_LIBRARY})
endif()

# LibTorch's config exposes a list of libraries; wrap it in one target.
if(NOT TARGET dcp_torch)
  add_library(dcp_torch INTERFACE IMPORTED)
  set_target_properties(dcp_torch PROPERTIES
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}"
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
    INTERFACE_COMPILE_OPTIONS "${TORCH_CXX_FLAGS}")
endif()
