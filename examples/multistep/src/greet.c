#include "config.h"
#include "greet.h"

const char *greeting(void) { return GREETING; }
const char *build_id(void) { return BUILD_ID; }
