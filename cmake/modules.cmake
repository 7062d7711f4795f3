# cmake/modules.cmake - kernc_module(): one module of the library (a folder: ir, frontend,
# passes, codegen, runtime, tools/check) as an object library with its dependencies declared,
# and the link check that makes those declarations binding.
#
#   kernc_module(NAME SOURCES f.c... [DEPS module...] [LIBS library...])
#
# makes the object library kernc_NAME (DEPS: the kernc modules it may call, LIBS: the outside
# libraries it may call; both give their usage requirements) and kernc_layer_NAME, a throwaway
# shared library (build/layers/) of NAME's objects and those of its dependencies, transitively,
# linked with --no-undefined against LIBS only. A call into a module not declared, or into a
# library not declared (LLVM from ir/, the runtime from a pass), leaves an undefined symbol there
# and the build fails: a call upstream is a link error. Static archives would not notice
# (undefined symbols wait for the final link, where libkernc holds every module), hence the
# shared library. The checks are built by default, and libkernc depends on them.
# Invariant: a module's dependencies are declared before it (kernc_module of each DEP came first).
set(KERNC_LAYER_DIR ${CMAKE_BINARY_DIR}/layers)

function(kernc_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS;LIBS" ${ARGN})
  add_library(kernc_${name} OBJECT ${M_SOURCES})
  target_include_directories(kernc_${name} PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})
  set(closure)
  foreach(d ${M_DEPS})
    if(NOT TARGET kernc_${d})
      message(FATAL_ERROR "kernc_module(${name}): dependency '${d}' is not declared before it")
    endif()
    get_property(dd GLOBAL PROPERTY KERNC_MODULE_DEPS_${d})
    list(APPEND closure ${d} ${dd})
  endforeach()
  list(REMOVE_DUPLICATES closure)
  set_property(GLOBAL PROPERTY KERNC_MODULE_DEPS_${name} ${closure})
  foreach(d ${M_DEPS})
    target_link_libraries(kernc_${name} PUBLIC kernc_${d})
  endforeach()
  target_link_libraries(kernc_${name} PUBLIC ${M_LIBS})

  # the check: only NAME's objects and its dependencies' (object libraries linked directly give
  # their objects; their LIBS come along as usage requirements)
  add_library(kernc_layer_${name} SHARED)
  target_link_libraries(kernc_layer_${name} PRIVATE kernc_${name})
  foreach(d ${closure})
    target_link_libraries(kernc_layer_${name} PRIVATE kernc_${d})
  endforeach()
  target_link_options(kernc_layer_${name} PRIVATE LINKER:--no-undefined)
  set_target_properties(kernc_layer_${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${KERNC_LAYER_DIR})
  set_property(GLOBAL APPEND PROPERTY KERNC_LAYER_CHECKS kernc_layer_${name})
endfunction()
