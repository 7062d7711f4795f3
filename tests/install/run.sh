#!/usr/bin/env bash
# tests/install/run.sh BUILD SOURCE WORK - kernc as its users get it (ctest's test_install):
# `cmake --install BUILD` into WORK/prefix, then, against that prefix only:
#   - the layout: program, libkernc.so with its soname, libkernc.a, the AOT runtime, kernc.h,
#     the CMake package and kernc.pc; libkernc.so needs no CUDA library;
#   - consumer.c built with find_package(kernc) (shared and static library) and with
#     `pkg-config --cflags --libs kernc`: each JITs a builder graph and an ONNX model, by value;
#   - the installed `kernc compile` makes libmlp.so from the prefix's own runtime archive (seen
#     in the link command), and aot_user.c runs it by value against ONNX Runtime;
#   - `cpack -G DEB` makes a .deb holding the same files under /usr.
# Prints one line per check and a closing count; exit status 1 when any check fails.
set -uo pipefail
build=$(realpath "$1") src=$(realpath "$2") work=$3
rm -rf "$work" && mkdir -p "$work" && work=$(realpath "$work")
prefix=$work/prefix
passed=0 failed=0
check() { # description, command...
  local what=$1
  shift
  if "$@" >"$work/last.log" 2>&1; then
    passed=$((passed + 1))
    echo "[       OK ] $what"
  else
    failed=$((failed + 1))
    echo "[  FAILED  ] $what"
    sed 's/^/    /' "$work/last.log" | tail -40
  fi
}
has_files() {
  for f in "$@"; do [ -e "$prefix/$f" ] || { echo "missing $prefix/$f"; return 1; }; done
}
no_cuda_needed() { # the DT_NEEDED entries of libkernc.so name no CUDA library
  readelf -d "$prefix/lib/libkernc.so" | grep NEEDED
  ! readelf -d "$prefix/lib/libkernc.so" | grep NEEDED | grep -Ei 'cuda|nvrtc'
}
soname_is() { readelf -d "$prefix/lib/libkernc.so" | grep -F "Library soname: [$1]"; }
run_consumer() { # program: run it (and show that a static one needs no libkernc.so)
  ldd "$1" | grep -E 'kernc|LLVM'
  LD_LIBRARY_PATH=$prefix/lib "$1" "$work"
}
cmake_consumer() { # build dir, kernc target
  cmake -S "$src/tests/install" -B "$work/$1" -DCMAKE_PREFIX_PATH="$prefix" \
    -DKERNC_TARGET="$2" -DCMAKE_BUILD_TYPE=Release && cmake --build "$work/$1" &&
    run_consumer "$work/$1/consumer"
}
pkgconfig_consumer() { # extra pkg-config flag (--static: libkernc.a)
  local flags
  flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config "$@" --cflags --libs kernc) || return 1
  # the linker takes libkernc.so over libkernc.a for -lkernc: name the archive for --static
  [ "${1:-}" = --static ] && flags=${flags/-lkernc /-l:libkernc.a }
  echo "pkg-config $* --cflags --libs kernc: $flags"
  # shellcheck disable=SC2086
  cc -std=c11 -O1 -o "$work/consumer_pc" "$src/tests/install/consumer.c" $flags \
    $(pkg-config --cflags --libs cmocka) -lm && run_consumer "$work/consumer_pc"
}
installed_compile() { # through a C compiler wrapper that logs its command line
  printf '#!/bin/sh\necho "$@" >> "%s/cc.log"\nexec cc "$@"\n' "$work" >"$work/logcc"
  chmod +x "$work/logcc"
  mkdir -p "$work/aot"
  CC=$work/logcc KERNC_RT= "$prefix/bin/kernc" compile "$work/mlp.onnx" -o "$work/aot/libmlp.so" &&
    grep -F "$prefix/lib/kernc/libkernc_rt.a" "$work/cc.log" &&
    cc -std=c11 -O1 -I"$work/aot" -o "$work/aot_user" "$src/tests/install/aot_user.c" \
      -L"$work/aot" -lmlp -Wl,-rpath,"$work/aot" -lm && "$work/aot_user" "$work"
}
deb_package() {
  (cd "$build" && cpack -G DEB -B "$work/deb") || return 1
  local deb
  deb=$(ls "$work"/deb/kernc_*.deb) || return 1
  dpkg-deb -I "$deb" | grep -E 'Package|Version|Depends'
  dpkg-deb -c "$deb" | awk '{ print $6 }' >"$work/deb.files"
  for f in ./usr/bin/kernc ./usr/lib/libkernc.so.0 ./usr/lib/libkernc.a ./usr/lib/kernc/libkernc_rt.a \
    ./usr/include/kernc.h ./usr/lib/cmake/kernc/kernc-config.cmake ./usr/lib/pkgconfig/kernc.pc; do
    grep -qxF "$f" "$work/deb.files" || { echo "not in the .deb: $f"; return 1; }
  done
}

check "cmake --install into a fresh prefix" cmake --install "$build" --prefix "$prefix"
check "the prefix holds kernc, libkernc.so/.a, the AOT runtime, kernc.h, kernc-config.cmake, kernc.pc" \
  has_files bin/kernc lib/libkernc.so lib/libkernc.a lib/kernc/libkernc_rt.a include/kernc.h \
  lib/cmake/kernc/kernc-config.cmake lib/cmake/kernc/kernc-config-version.cmake lib/pkgconfig/kernc.pc
check "libkernc.so's soname is libkernc.so.$(sed -nE 's/^#define KC_VERSION_MAJOR ([0-9]+)$/\1/p' "$src/include/kernc.h")" \
  soname_is "libkernc.so.$(sed -nE 's/^#define KC_VERSION_MAJOR ([0-9]+)$/\1/p' "$src/include/kernc.h")"
check "libkernc.so needs no CUDA library (NVRTC and the driver are dlopen'ed)" no_cuda_needed
check "the installed kernc --version" "$prefix/bin/kernc" --version
check "test data: mlp.onnx and ONNX Runtime's outputs" python3 "$src/tests/install/make_data.py" "$work"
check "find_package(kernc), kernc::kernc (shared): JIT a graph and an ONNX model" \
  cmake_consumer cmake-shared kernc::kernc
check "find_package(kernc), kernc::kernc_static: JIT a graph and an ONNX model" \
  cmake_consumer cmake-static kernc::kernc_static
check "pkg-config --cflags --libs kernc: JIT a graph and an ONNX model" pkgconfig_consumer
check "pkg-config --static --cflags --libs kernc (libkernc.a): the same" pkgconfig_consumer --static
check "the installed kernc compile (its own runtime archive), then the .so by value" installed_compile
check "cpack -G DEB: a .deb with the same files under /usr" deb_package
echo "test_install: $passed passed, $failed failed"
((failed == 0))
