# cmake/install.cmake - what `cmake --install BUILD --prefix P` puts under P, how other projects
# find it, and the .deb `cpack` makes of the same files:
#   bin/kernc                      the program (libkernc.a linked in)
#   LIBDIR/libkernc.so.MAJOR...    the shared library, soname libkernc.so.MAJOR; needs LLVM and
#                                  protobuf-c, never the CUDA toolkit (NVRTC is dlopen'ed)
#   LIBDIR/libkernc.a              the static library (its users link LLVM and protobuf-c too)
#   LIBDIR/kernc/libkernc_rt.a     the runtime `kernc compile` links into every model's .so;
#                                  kc_export finds it there, beside the library or the program
#   include/kernc.h                the API, with KC_VERSION_* and kc_version()
#   LIBDIR/cmake/kernc/            kernc-config.cmake: find_package(kernc) gives kernc::kernc
#                                  (shared) and kernc::kernc_static
#   LIBDIR/pkgconfig/kernc.pc      pkg-config --cflags --libs kernc (--static for libkernc.a)
# Everything is relative to the prefix (the .pc file through ${pcfiledir}), so an install tree
# can be moved.
include(CMakePackageConfigHelpers)

set_target_properties(kernc PROPERTIES EXPORT_NAME kernc)
set_target_properties(kernc_static PROPERTIES EXPORT_NAME kernc_static)
install(TARGETS kernc kernc_static EXPORT kernc-targets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS kernc_tool RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS kernc_rt ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}/kernc)
install(FILES ${CMAKE_SOURCE_DIR}/include/kernc.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(KERNC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kernc)
install(EXPORT kernc-targets NAMESPACE kernc:: DESTINATION ${KERNC_CMAKE_DIR}
  FILE kernc-targets.cmake)
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/kernc-config.cmake.in
  ${CMAKE_BINARY_DIR}/kernc-config.cmake INSTALL_DESTINATION ${KERNC_CMAKE_DIR})
# 0.x: a minor version may change the API, so only the same MAJOR.MINOR is compatible
write_basic_package_version_file(${CMAKE_BINARY_DIR}/kernc-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/kernc-config.cmake ${CMAKE_BINARY_DIR}/kernc-config-version.cmake
  DESTINATION ${KERNC_CMAKE_DIR})

# kernc.pc: the prefix is found from the file's own place (LIBDIR/pkgconfig, up to the prefix)
file(RELATIVE_PATH KERNC_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" KERNC_PC_TO_PREFIX "${KERNC_PC_TO_PREFIX}")
configure_file(${CMAKE_SOURCE_DIR}/cmake/kernc.pc.in ${CMAKE_BINARY_DIR}/kernc.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/kernc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# cpack: a .deb installing the same files under /usr
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kernc)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "compiler for model graphs: ONNX in, LLVM CPU kernels and CUDA C out (JIT and AOT .so)")
set(CPACK_PACKAGE_CONTACT "kernc developers <kernc@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
# libkernc.so needs LLVM 19 and protobuf-c; `kernc compile` links models with a C compiler
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libllvm19, libprotobuf-c1, gcc | c-compiler")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "llvm-19-dev, libprotobuf-c-dev, nvidia-cuda-toolkit")
include(CPack)
