#include "kernels/cpu/ops.h"
