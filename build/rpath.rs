//! Embeds the libtorch library folder as an rpath in every binary of the
//! package, so test, bench and service binaries run without `LD_LIBRARY_PATH`.
//!
//! `torch-sys` (a direct build dependency of each crate that uses this script)
//! exports the folder it linked against as `DEP_TCH_LIBTORCH_LIB`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
