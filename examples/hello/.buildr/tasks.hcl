# The demo: compile a C program in a rootless container and bring back only what changed.
buildr {
  out_dir = ".buildr/out"
}

task "script" "hello" {
  container {
    image = "localhost/buildr-gcc:bookworm"
  }
  environment = { GREETING = "Hello from a rootless container" }
  script      = <<-EOT
    make
    mkdir -p reports/nested/deeper
    echo "built by $(gcc -dumpfullversion) in $BUILDR_WORKSPACE" > reports/nested/deeper/build.txt
    printf '#!/bin/sh\nexec "$(dirname "$0")/hello" "$@"\n' > run-hello.sh
    chmod +x run-hello.sh
    ln -sf hello latest
  EOT
}

task "script" "busybox" {
  container {
    image = "localhost/buildr-busybox:latest"
  }
  inline = [
    "mkdir -p out/a/b",
    "echo \"no libc here: $(ls /lib 2>&1 | head -1)\" > out/a/b/note.txt",
  ]
}
