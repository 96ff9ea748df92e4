# A multi-step C build: configure generates a header, build compiles over it, test runs the
# tests over both. Each step gets the previous steps' outputs of this run laid over its inputs
# (inputs_from), and brings back only what it made itself.
#   buildr-podman run            # the default: test, and what it needs
#   EXAMPLE_INPUTS=copy buildr-podman run
buildr {
  default = ["test"]
}

locals {
  image  = "localhost/buildr-gcc:bookworm"
  inputs = env("EXAMPLE_INPUTS", "mount")
}

task "script" "configure" {
  container {
    image  = local.image
    inputs = local.inputs
  }
  script = "sh ./configure.sh"
}

build "script" "build" {
  container {
    image  = local.image
    inputs = local.inputs
    user   = "1000:1000"  # make and gcc need no root
  }
  inputs_from = [task.configure]
  script      = "make"
}

task "script" "test" {
  container {
    image  = local.image
    inputs = local.inputs
    user   = "1000:1000"
  }
  inputs_from = [task.configure, build.build]
  script      = "make check && cat test-report.txt"
}
