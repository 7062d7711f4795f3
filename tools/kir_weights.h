/*
 * tools/kir_weights.h - a .kir file's weights in a safetensors file beside it: `kernc dump
 * --weights=W` writes them and records W on the text's "# kir" line (weights="W", relative to
 * the .kir's folder); loading a .kir that names such a file binds its weights' data by name.
 * The text parser (ir/) only records the name; the file is read here, where the program loads.
 */
#ifndef KERNC_TOOLS_KIR_WEIGHTS_H
#define KERNC_TOOLS_KIR_WEIGHTS_H

#include "kernc.h"

/* Write g's named tensors with data to path (safetensors) and make g name it, relative to the
 * folder of kir_path (NULL or "-": the current folder). An exit code (1 after saying why). */
int kir_weights_save(kc_context *ctx, kc_graph *g, const char *path, const char *kir_path);
/* When g names a weights file relative to the folder of in_path, name it relative to the folder
 * of out_path instead (the text is written there; NULL or "-", stdout: the name stays as read,
 * so the text round-trips); an exit code (1 after saying why). */
int kir_weights_rebase(kc_graph *g, const char *in_path, const char *out_path);
/* Bind the data of g's weights from the file g names (relative to kir_path's folder; nothing
 * when it names none). Every weight without data must be in the file, with its dtype and shape. */
kc_status kir_weights_load(kc_context *ctx, kc_graph *g, const char *kir_path);

#endif /* KERNC_TOOLS_KIR_WEIGHTS_H */
