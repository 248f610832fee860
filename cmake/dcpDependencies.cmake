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

# Reading PyTorch's formats (dcp/src/interop): libdeflate's CRC-32 for zip
# records (PCLMUL, ~13 GB/s here against zlib's ~4), libzstd for DCP's
# stream.zstd/1 items, nlohmann-json for safetensors headers and Hugging
# Face index files. All private to dcp::core.
if(NOT TARGET dcp_libdeflate)
  find_path(LIBDEFLATE_INCLUDE_DIR libdeflate.h REQUIRED)
  find_library(LIBDEFLATE_LIBRARY deflate REQUIRED)
  add_library(dcp_libdeflate INTERFACE IMPORTED)
  set_target_properties(dcp_libdeflate PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${LIBDEFLATE_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES ${LIBDEFLATE_LIBRARY})
endif()
if(NOT TARGET dcp_zstd)
  find_path(ZSTD_INCLUDE_DIR zstd.h REQUIRED)
  find_library(ZSTD_LIBRARY zstd REQUIRED)
  add_library(dcp_zstd INTERFACE IMPORTED)
  set_target_properties(dcp_zstd PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${ZSTD_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES ${ZSTD_LIBRARY})
endif()
find_package(nlohmann_json 3 REQUIRED)
