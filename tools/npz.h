/*
 * tools/npz.h - NumPy .npz archives (np.savez, np.savez_compressed) for the kernc program's
 * --input: a zip file of NAME.npy entries, stored or deflated. Only the program links zlib;
 * libkernc reads single .npy files (runtime/npy.c), which each entry is handed to.
 */
#ifndef KERNC_TOOLS_NPZ_H
#define KERNC_TOOLS_NPZ_H

#include "kernc.h"

#include <stddef.h>

typedef struct cli_npz {
  char **names;      /* entry names without ".npy" (np.savez's keyword names) */
  kc_tensor_desc *t; /* their arrays; data malloc'd (kc_npy_free) */
  size_t n;
} cli_npz;

/* Read every .npy entry of the archive at path; KC_ERR_IO with a message naming the file (and
 * the entry) when it is not a well-formed archive. *z is empty on failure. */
kc_status cli_npz_read(kc_context *ctx, const char *path, cli_npz *z);
/* Read an archive held in memory (what names it in messages). */
kc_status cli_npz_read_mem(kc_context *ctx, const unsigned char *buf, size_t len, const char *what,
                           cli_npz *z);
/* Free the names and the arrays' data still owned by z. */
void cli_npz_free(cli_npz *z);

#endif /* KERNC_TOOLS_NPZ_H */
