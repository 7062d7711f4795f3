/*
 * ir/version.c - kc_version: the version of the library that runs, from kernc.h's KC_VERSION_*
 * macros as they were when the library was built (a program compares them with its own header's).
 */
#include "kernc.h"

#define KC_STR_(x) #x
#define KC_STR(x) KC_STR_(x)

const char *kc_version(void) {
  return KC_STR(KC_VERSION_MAJOR) "." KC_STR(KC_VERSION_MINOR) "." KC_STR(KC_VERSION_PATCH);
}

int kc_version_number(void) { return KC_VERSION; }
