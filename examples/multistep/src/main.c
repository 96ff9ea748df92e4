#include <stdio.h>
#include "greet.h"

int main(void) {
    printf("%s (build %s)\n", greeting(), build_id());
    return 0;
}
