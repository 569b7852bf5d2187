//! Generates the Rust side of the C ABI from `dmirror.h` with bindgen, so the header is the one
//! source of truth: a field added or retyped there changes the Rust structs, and the
//! static_assertions in src/abi.rs then say whether both sides still agree.
//!
//! Needs libclang at build time (Debian: `apt-get install libclang-dev`).
use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let header = manifest.join("dmirror.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed=build.rs");

    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        // Only stddef.h/stdint.h are needed; the freestanding headers of clang itself provide
        // them for every target (including x86_64-unknown-none, where there is no libc).
        .clang_arg("-ffreestanding")
        .use_core()
        .ctypes_prefix("core::ffi")
        .allowlist_item("dmirror_.*|DMIRROR_.*")
        // Sizes and offsets are pinned with static_assertions instead (src/abi.rs): the
        // generated layout tests would be #[test]s, which a kernel build never runs.
        .layout_tests(false)
        .derive_default(true)
        .derive_debug(false)
        .generate_comments(false)
        .formatter(bindgen::Formatter::None)
        .parse_callbacks(Box::new(MacroTypes))
        .generate()
        .expect("bindgen could not generate the bindings from shim-c/dmirror.h (is libclang-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("dmirror_h.rs");
    bindings.write_to_file(&out).expect("writing the bindings");
}

/// errno values and log levels are `int` on the C side (`DMIRROR_E*`, `DMIRROR_LOG_*`): give the
/// generated constants the same type so they compare with the callbacks' `int` without casts.
#[derive(Debug)]
struct MacroTypes;

impl bindgen::callbacks::ParseCallbacks for MacroTypes {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        let signed = name == "DMIRROR_OK"
            || (name.starts_with("DMIRROR_E") && !name.starts_with("DMIRROR_EV_"))
            || (name.starts_with("DMIRROR_LOG_"));
        if signed {
            Some(bindgen::callbacks::IntKind::Int)
        } else {
            None
        }
    }
}
