/* tools/kernc.c - placeholder main until the CLI lands. */
#include "kernc.h"
int main(void) { return 0; }
