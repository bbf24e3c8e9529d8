#include "models/safetensors.h"
