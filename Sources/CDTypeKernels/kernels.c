#include "CDTypeKernels.h"
