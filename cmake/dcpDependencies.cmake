# Finds what dcp++ builds against. Also used by dcpConfig.cmake after install.
find_package(Torch REQUIRED)
find_package(TBB REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)

# dcp_import_library(<target> <header> <library>): an imported target for a
# library Debian ships without a CMake package, from its header and its
# library file (cache variables <TARGET>_INCLUDE_DIR and <TARGET>_LIBRARY).
function(dcp_import_library target header library)
  if(TARGET ${target})
    return()
  endif()
  string(TOUPPER ${target} var)
  find_path(${var}_INCLUDE_DIR ${header} REQUIRED)
  find_library(${var}_LIBRARY ${library} REQUIRED)
  add_library(${target} INTERFACE IMPORTED)
  set_target_properties(${target} PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${${var}_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES ${${var}_LIBRARY})
endfunction()

dcp_import_library(dcp_xxhash xxhash.h xxhash)

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
dcp_import_library(dcp_libdeflate libdeflate.h deflate)
dcp_import_library(dcp_zstd zstd.h zstd)
find_package(nlohmann_json 3 REQUIRED)
