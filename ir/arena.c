/*
 * ir/arena.c - bump allocator owned by a graph; everything in it is freed at once.
 *
 * Chunks are a linked list; a request larger than the default chunk gets a chunk of its own,
 * so big constant tensors do not waste space. Memory is zeroed and aligned to 64 bytes
 * (enough for any dtype and for AVX-512 loads of weight data).
 *
 * Marks: chunks are only ever added in front of the head or right behind it, so the chunks
 * added since a mark are those in front of the marked head plus those between it and the chunk
 * that followed it then; release frees exactly those and restores the head's fill.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE (64 * 1024)
#define ALIGN 64

struct kc_arena_chunk {
  kc_arena_chunk *next;
  size_t used, size;
  _Alignas(ALIGN) unsigned char data[];
};

void *kc_arena_alloc(kc_arena *a, size_t size) {
  size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  if (size == 0) size = ALIGN;
  kc_arena_chunk *c = a->head;
  if (!c || c->size - c->used < size) {
    size_t cap = size > CHUNK_SIZE ? size : CHUNK_SIZE;
    c = aligned_alloc(ALIGN, (sizeof *c + cap + ALIGN - 1) & ~(size_t)(ALIGN - 1));
    if (!c) return NULL;
    c->used = 0;
    c->size = cap;
    /* a dedicated big chunk goes behind the head so the head keeps serving small requests */
    if (cap > CHUNK_SIZE && a->head) {
      c->next = a->head->next;
      a->head->next = c;
    } else {
      c->next = a->head;
      a->head = c;
    }
  }
  void *p = c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

char *kc_arena_strdup(kc_arena *a, const char *s) {
  if (!s) return NULL;
  return kc_arena_memdup(a, s, strlen(s) + 1);
}

void *kc_arena_memdup(kc_arena *a, const void *p, size_t size) {
  void *q = kc_arena_alloc(a, size);
  if (q && size) memcpy(q, p, size);
  return q;
}

void kc_arena_free(kc_arena *a) {
  kc_arena_chunk *c = a->head;
  while (c) {
    kc_arena_chunk *n = c->next;
    free(c);
    c = n;
  }
  a->head = NULL;
}

kc_arena_pos kc_arena_mark(const kc_arena *a) {
  kc_arena_pos m = {a->head, a->head ? a->head->next : NULL, a->head ? a->head->used : 0};
  return m;
}

void kc_arena_release(kc_arena *a, kc_arena_pos m) {
  kc_arena_chunk *c = a->head;
  while (c && c != m.head) { /* in front of the marked head: all new */
    kc_arena_chunk *n = c->next;
    free(c);
    c = n;
  }
  a->head = c;
  if (!c) return; /* the mark was of an empty arena */
  kc_arena_chunk *b = c->next;
  while (b && b != m.next) { /* big chunks slipped in behind the marked head */
    kc_arena_chunk *n = b->next;
    free(b);
    b = n;
  }
  c->next = b;
  c->used = m.used;
}
