#include <stdio.h>
#include <string.h>
#include "config.h"
#include "greet.h"

int main(void) {
    if (strcmp(greeting(), GREETING) != 0 || strlen(build_id()) != 36) {
        printf("FAIL\n");
        return 1;
    }
    printf("ok build %s\n", build_id());
    return 0;
}
