//! The cdylib exports its entry point only. Without this, dependencies' C APIs leak into the
//! dynamic symbol table (object_store turns on crc-fast's `ffi` feature, which exports
//! `crc_fast_*`), where they could clash with a host's own symbols. `--exclude-libs ALL` makes
//! every symbol that comes from a static archive (each dependency's rlib) local; the entry
//! point lives in this crate's own objects and stays exported.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    }
}
