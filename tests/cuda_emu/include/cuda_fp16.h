/* tests/cuda_emu/include/cuda_fp16.h - the emulation's stand-in for CUDA's header. */
#pragma once
#include "kc_emu_device.h"
