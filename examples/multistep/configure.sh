#!/bin/sh
# Writes config.h, as a configure script does: what the build needs to know, and an id that
# is new on every run (so a test can tell this run's build from an earlier one).
set -e
id=$(cat /proc/sys/kernel/random/uuid)
cat > config.h <<END
#define GREETING "Hello from a configured build"
#define BUILD_ID "$id"
END
echo "configured build $id"
