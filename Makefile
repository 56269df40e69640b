# SPDX-License-Identifier: GPL-2.0-only
# Front door.
#
#   make            build kvm.ko against KDIR (default: the running kernel's build dir)
#   make test       host tests (cargo test, clippy, rustfmt) + the in-guest suite (builds or
#                   reuses the debug kernel, boots QEMU); prints the host and guest summaries,
#                   then "N passed, M failed, K skipped" last
#   make run        builds everything, boots QEMU, loads the module with tdx=emulated and
#                   prints a short report of what it did
#   make host-test  only the host side
#   make harness-selftest  checks that make test cannot hide a failure (injects a failing and
#                   an aborting host test, a panicking and a missing guest client; boots QEMU)
#   make bench      benchmark tables (release build)
#   make bench-run  run-loop benchmarks in QEMU: our kvm.ko against upstream kvm_amd (built for
#                   the pipeline kernel as an external module), figures and ratios; not a test
#
# In a kernel tree the same Kbuild/Kconfig build the module with CONFIG_TDX_KVM_RS; out of
# tree this Makefile sets CONFIG_TDX_KVM_RS=m.

KDIR ?= /lib/modules/$(shell uname -r)/build
CARGO ?= cargo

.PHONY: all module test host-test guest-test harness-selftest run bench bench-run long-test clean

all: module

module:
	KDIR=$(KDIR) scripts/build-module.sh

test:
	@bash scripts/test-all.sh

host-test:
	@bash scripts/host-test.sh

guest-test:
	@bash scripts/guest-suite.sh

harness-selftest:
	@bash scripts/harness-selftest.sh

run:
	@bash scripts/run.sh

bench:
	$(CARGO) run --release -p bench
	bash scripts/instr-per-fault.sh

bench-run:
	@bash scripts/bench-run.sh

# The 10^6-operation random run (ignored by default).
long-test:
	$(CARGO) test --workspace -- --ignored

clean:
	$(CARGO) clean
	rm -f *.o *.ko *.rmeta *.mod *.mod.c .*.cmd Module.symvers modules.order src/*.o src/.*.cmd
