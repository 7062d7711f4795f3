/*
 * runtime/export_name.c - which C prefixes kc_export accepts for a model's entry points.
 *
 * The generated header declares `typedef struct NAME NAME_t;`, NAME_tensor, NAME_create, _run,
 * _free, _error, NAME_session_t, NAME_train_* and NAME_* macros, and is included by user C (and
 * C++) next to the standard headers. A name is refused when that header would not compile or
 * would redefine something a program sees: not an identifier, a C or C++ keyword, a name
 * reserved to the implementation (a leading underscore), kernc's own prefixes (the library calls
 * kc_aot_run; KC_/KERNC_ macros are the header's), a macro of the standard headers (NULL,
 * INT64_MAX...), or a name whose NAME_t or NAME_create is a standard type or function (int64_t,
 * size_t, pthread_create, thrd_create...).
 *
 * Invariant: the lists are of names exactly as C spells them; the checks are pure functions.
 */
#include "runtime/export.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#define NAME_MAX_LEN 127

/* C11/C23 and C++ keywords (the header is wrapped in extern "C" for C++). */
static const char *const keywords[] = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break",
    "case", "catch", "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept",
    "const", "consteval", "constexpr", "constinit", "const_cast", "continue", "co_await",
    "co_return", "co_yield", "decltype", "default", "delete", "do", "double", "dynamic_cast",
    "else", "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto", "if",
    "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq", "nullptr",
    "operator", "or", "or_eq", "private", "protected", "public", "register", "reinterpret_cast",
    "requires", "restrict", "return", "short", "signed", "sizeof", "static", "static_assert",
    "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true", "try",
    "typedef", "typeid", "typename", "typeof", "typeof_unqual", "union", "unsigned", "using",
    "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq",
    /* macros of <stddef.h>, <stdio.h>, <errno.h>, <assert.h>, <stdbool.h>, <stdint.h> */
    "NULL", "EOF", "BUFSIZ", "FILENAME_MAX", "errno", "assert", "offsetof", "stdin", "stdout",
    "stderr", "SIZE_MAX", "PTRDIFF_MIN", "PTRDIFF_MAX", "INTMAX_MIN", "INTMAX_MAX", "UINTMAX_MAX",
    "INTPTR_MIN", "INTPTR_MAX", "UINTPTR_MAX", "WCHAR_MIN", "WCHAR_MAX", "WINT_MIN", "WINT_MAX",
    "SIG_ATOMIC_MIN", "SIG_ATOMIC_MAX", "INTMAX_C", "UINTMAX_C"};

/* NAME such that NAME_t is a standard or POSIX type, or NAME_create a standard function. */
static const char *const type_stems[] = {"size",
                                         "ssize",
                                         "ptrdiff",
                                         "wchar",
                                         "wint",
                                         "max_align",
                                         "time",
                                         "clock",
                                         "clockid",
                                         "timer",
                                         "off",
                                         "off64",
                                         "pid",
                                         "uid",
                                         "gid",
                                         "id",
                                         "mode",
                                         "dev",
                                         "ino",
                                         "nlink",
                                         "blksize",
                                         "blkcnt",
                                         "fpos",
                                         "pthread",
                                         "pthread_mutex",
                                         "pthread_cond",
                                         "pthread_attr",
                                         "pthread_key",
                                         "pthread_once",
                                         "pthread_rwlock",
                                         "pthread_spinlock",
                                         "pthread_barrier",
                                         "sem",
                                         "sig_atomic",
                                         "sigset",
                                         "mbstate",
                                         "char8",
                                         "char16",
                                         "char32",
                                         "float",
                                         "double",
                                         "div",
                                         "ldiv",
                                         "lldiv",
                                         "imaxdiv",
                                         "fenv",
                                         "fexcept",
                                         "locale",
                                         "thrd",
                                         "mtx",
                                         "cnd",
                                         "tss",
                                         "intmax",
                                         "uintmax",
                                         "intptr",
                                         "uintptr",
                                         "key",
                                         "useconds",
                                         "suseconds",
                                         "socklen",
                                         "sa_family",
                                         "in_addr",
                                         "in_port",
                                         "nfds",
                                         "regoff"};

static bool in_list(const char *s, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s, list[i]) == 0) return true;
  return false;
}

/* int8 ... uint64, int_least16, uint_fast32...: NAME_t is a <stdint.h> type; and the
 * <stdint.h> limit and constant macros (INT8_MAX, UINT_LEAST16_MIN, INT64_C...). */
static bool stdint_name(const char *s) {
  const char *p = s;
  bool upper = isupper((unsigned char)*p);
  const char *u = upper ? "U" : "u", *in = upper ? "INT" : "int";
  if (strncmp(p, u, 1) == 0) p++;
  if (strncmp(p, in, 3) != 0) return false;
  p += 3;
  const char *least = upper ? "_LEAST" : "_least", *fast = upper ? "_FAST" : "_fast";
  if (strncmp(p, least, 6) == 0)
    p += 6;
  else if (strncmp(p, fast, 5) == 0)
    p += 5;
  if (!isdigit((unsigned char)*p)) return false;
  while (isdigit((unsigned char)*p))
    p++;
  if (!upper) return *p == 0;
  return strcmp(p, "_MAX") == 0 || strcmp(p, "_MIN") == 0 || strcmp(p, "_C") == 0;
}

static bool prefix_ci(const char *s, const char *prefix) {
  for (; *prefix; s++, prefix++)
    if (tolower((unsigned char)*s) != *prefix) return false;
  return true;
}

bool kc_rt_model_name_ok(const char *name, const char **why) {
  size_t len = strlen(name);
  *why = NULL;
  if (!len || len > NAME_MAX_LEN || isdigit((unsigned char)*name))
    *why = "is not a C identifier of 1 to 127 characters";
  for (const char *p = name; !*why && *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '_')
      *why = "is not a C identifier (letters, digits and _ only)";
  if (*why) return false;
  if (*name == '_')
    *why = "starts with _, which C reserves for the implementation";
  else if (prefix_ci(name, "kc_") || prefix_ci(name, "kernc_"))
    *why = "starts with kc_ or kernc_, kernc's own prefixes";
  else if (in_list(name, keywords, sizeof keywords / sizeof *keywords))
    *why = "is a C or C++ keyword or a name the standard headers define";
  else if (stdint_name(name) || in_list(name, type_stems, sizeof type_stems / sizeof *type_stems))
    *why = "would make the header define NAME_t or NAME_create, which the standard headers "
           "already have";
  return !*why;
}

kc_status kc_export_check_name(kc_context *ctx, const char *name) {
  kc_clear_error(ctx);
  const char *why;
  if (!name) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "model name: none given");
  if (kc_rt_model_name_ok(name, &why)) return KC_OK;
  return kc_errorf(ctx, KC_ERR_INVALID_ARG, "model name '%.200s' %s", name, why);
}
