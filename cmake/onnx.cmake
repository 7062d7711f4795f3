# cmake/onnx.cmake - generate C bindings for onnx.proto with protoc-c (Debian's libonnx-dev ships
# the schema) and add the frontend sources. Sets KERNC_GENERATED_SOURCES,
# KERNC_GENERATED_INCLUDE_DIRS and KERNC_DEP_LIBS.
find_program(PROTOC_C protoc-c REQUIRED)
pkg_check_modules(PROTOBUF_C REQUIRED IMPORTED_TARGET libprotobuf-c)
find_file(ONNX_PROTO onnx.proto PATHS /usr/include/onnx NO_DEFAULT_PATH REQUIRED)

set(ONNX_GEN_DIR ${CMAKE_BINARY_DIR}/gen)
file(MAKE_DIRECTORY ${ONNX_GEN_DIR})
get_filename_component(ONNX_PROTO_DIR ${ONNX_PROTO} DIRECTORY)
add_custom_command(
  OUTPUT ${ONNX_GEN_DIR}/onnx.pb-c.c ${ONNX_GEN_DIR}/onnx.pb-c.h
  COMMAND ${PROTOC_C} --c_out=${ONNX_GEN_DIR} --proto_path=${ONNX_PROTO_DIR} ${ONNX_PROTO}
  DEPENDS ${ONNX_PROTO}
  COMMENT "protoc-c: generating C bindings for onnx.proto")

file(GLOB KERNC_FRONTEND_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/frontend/*.c)
set(KERNC_GENERATED_SOURCES ${ONNX_GEN_DIR}/onnx.pb-c.c ${KERNC_FRONTEND_SOURCES})
set(KERNC_GENERATED_INCLUDE_DIRS ${ONNX_GEN_DIR})
set(KERNC_DEP_LIBS PkgConfig::PROTOBUF_C)
