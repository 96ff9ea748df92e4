#ifndef GREET_H
#define GREET_H
const char *greeting(void);
const char *build_id(void);
#endif
