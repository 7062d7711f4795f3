# cmake/onnx.cmake - generate C bindings for onnx.proto with protoc-c (Debian's libonnx-dev ships
# the schema), for the frontend module. Sets ONNX_GEN_SOURCES (the generated .c) and ONNX_GEN_DIR
# (where onnx.pb-c.h is), and defines the imported target PkgConfig::PROTOBUF_C.
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
set(ONNX_GEN_SOURCES ${ONNX_GEN_DIR}/onnx.pb-c.c)
