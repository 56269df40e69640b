/work/main/src/.tdx_kvm_main.o.d: /root/.cache/tdx-kvm-rs/linux-src-6.12.117-1_deb12u1/.clippy.toml /work/main/src/tdx_kvm_main.rs /work/main/src/abi.rs /work/main/src/backend.rs /work/main/src/dev.rs /work/main/src/env.rs /work/main/src/extable.rs /work/main/src/glue.rs /work/main/src/hw.rs /work/main/src/selftest.rs /work/main/src/stats.rs /work/main/src/vm.rs /work/main/src/vmx.rs ./rust/libcore.rmeta ./rust/libkernel.rmeta ./rust/libffi.rmeta ./rust/libcompiler_builtins.rmeta ./rust/libmacros.so ./rust/libbindings.rmeta ./rust/libuapi.rmeta ./rust/libbuild_error.rmeta /work/main/libmmu.rmeta /work/main/libbitflags.rmeta /work/main/libtdx.rmeta

/work/main/src/tdx_kvm_main.o: /root/.cache/tdx-kvm-rs/linux-src-6.12.117-1_deb12u1/.clippy.toml /work/main/src/tdx_kvm_main.rs /work/main/src/abi.rs /work/main/src/backend.rs /work/main/src/dev.rs /work/main/src/env.rs /work/main/src/extable.rs /work/main/src/glue.rs /work/main/src/hw.rs /work/main/src/selftest.rs /work/main/src/stats.rs /work/main/src/vm.rs /work/main/src/vmx.rs ./rust/libcore.rmeta ./rust/libkernel.rmeta ./rust/libffi.rmeta ./rust/libcompiler_builtins.rmeta ./rust/libmacros.so ./rust/libbindings.rmeta ./rust/libuapi.rmeta ./rust/libbuild_error.rmeta /work/main/libmmu.rmeta /work/main/libbitflags.rmeta /work/main/libtdx.rmeta

/root/.cache/tdx-kvm-rs/linux-src-6.12.117-1_deb12u1/.clippy.toml:
/work/main/src/tdx_kvm_main.rs:
/work/main/src/abi.rs:
/work/main/src/backend.rs:
/work/main/src/dev.rs:
/work/main/src/env.rs:
/work/main/src/extable.rs:
/work/main/src/glue.rs:
/work/main/src/hw.rs:
/work/main/src/selftest.rs:
/work/main/src/stats.rs:
/work/main/src/vm.rs:
/work/main/src/vmx.rs:
./rust/libcore.rmeta:
./rust/libkernel.rmeta:
./rust/libffi.rmeta:
./rust/libcompiler_builtins.rmeta:
./rust/libmacros.so:
./rust/libbindings.rmeta:
./rust/libuapi.rmeta:
./rust/libbuild_error.rmeta:
/work/main/libmmu.rmeta:
/work/main/libbitflags.rmeta:
/work/main/libtdx.rmeta:

# env-dep:CLIPPY_ARGS
# env-dep:CLIPPY_CONF_DIR=/root/.cache/tdx-kvm-rs/linux-src-6.12.117-1_deb12u1
