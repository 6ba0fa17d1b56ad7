//! Links libtorch so that binaries run without `LD_LIBRARY_PATH` and use a
//! GPU where one is present.
//!
//! `torch-sys` (a direct dependency of each crate that uses this script)
//! exports the folder it linked against as `DEP_TCH_LIBTORCH_LIB`. That
//! folder becomes an rpath of every binary of the package (services, tests,
//! benches). When the libtorch there has CUDA, `libtorch_cuda` is linked
//! with `--no-as-needed`: nothing references it by symbol, so the default
//! `--as-needed` would drop it and CUDA would never be seen.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-L{lib},-ltorch_cuda,--as-needed");
    }
}
