# Imports llama.cpp from the cache directory that scripts/llama-cpp builds
# (shared libraries; the executable finds them through its RPATH).
if(NOT LLAMA_CPP_DIR)
  message(FATAL_ERROR "LLAMA_CPP_DIR is not set: run scripts/setup (or `make build`), which builds llama.cpp and passes it")
endif()
set(_ll_src ${LLAMA_CPP_DIR}/src)
set(_ll_bin ${LLAMA_CPP_DIR}/build/bin)
foreach(f ${_ll_bin}/libllama.so ${_ll_bin}/libggml.so ${_ll_bin}/libggml-base.so ${_ll_src}/include/llama.h)
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "llama.cpp build incomplete: ${f} is missing (rerun scripts/llama-cpp)")
  endif()
endforeach()

add_library(llama::llama SHARED IMPORTED GLOBAL)
set_target_properties(llama::llama PROPERTIES
  IMPORTED_LOCATION ${_ll_bin}/libllama.so
  INTERFACE_INCLUDE_DIRECTORIES "${_ll_src}/include;${_ll_src}/ggml/include")
add_library(llama::ggml SHARED IMPORTED GLOBAL)
set_target_properties(llama::ggml PROPERTIES
  IMPORTED_LOCATION ${_ll_bin}/libggml.so
  INTERFACE_INCLUDE_DIRECTORIES "${_ll_src}/ggml/include")
add_library(llama::ggml-base SHARED IMPORTED GLOBAL)
set_target_properties(llama::ggml-base PROPERTIES
  IMPORTED_LOCATION ${_ll_bin}/libggml-base.so
  INTERFACE_INCLUDE_DIRECTORIES "${_ll_src}/ggml/include")
# llama.cpp's common library: only engine/grammar.cpp includes its headers.
add_library(llama::common SHARED IMPORTED GLOBAL)
set_target_properties(llama::common PROPERTIES
  IMPORTED_LOCATION ${_ll_bin}/libllama-common.so
  INTERFACE_INCLUDE_DIRECTORIES "${_ll_src}/common;${_ll_src}/vendor")
set(CMAKE_BUILD_RPATH ${_ll_bin})
set(CMAKE_INSTALL_RPATH ${_ll_bin})

# Where tests and benchmarks find llama.cpp's own programs and vocab files.
set(LLAMA_CPP_BIN ${_ll_bin} CACHE INTERNAL "")
set(LLAMA_CPP_VOCAB_DIR ${_ll_src}/models CACHE INTERNAL "")
