//! Builds `tests/ffi/ffi_test.c` with the system C compiler, links it with this crate's
//! staticlib, and runs it: the C program drives a mirror only through `dmirror.h` (writes,
//! reads, a leg failure, a resync) with legs emulated in memory and exits non-zero if any of its
//! checks failed. Needs a C compiler (`cc`, or `$CC`).
use std::path::PathBuf;
use std::process::Command;

/// The staticlib cargo built for this test run. `cargo test` builds the library with all its
/// crate types into target/<profile>/deps/ as libdmirror_ffi-<hash>.a but does not copy it up to
/// target/<profile>/; the newest one there is the one built for this run (the library is rebuilt
/// before its tests whenever it changed).
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("target/<profile>/deps");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(deps).expect("reading deps") {
        let path = entry.expect("deps entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("libdmirror_ffi-") && name.ends_with(".a")) {
            continue;
        }
        let mtime = path.metadata().and_then(|m| m.modified()).expect("mtime");
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, path));
        }
    }
    let fallback = deps.parent().map(|p| p.join("libdmirror_ffi.a"));
    best.map(|(_, p)| p)
        .or(fallback)
        .expect("no libdmirror_ffi staticlib")
}

/// Compiles ffi_test.c once per test binary run (each test builds its own copy: they may run in
/// parallel) and returns the executable.
fn build(name: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../tests/ffi/ffi_test.c");
    let lib = staticlib();
    assert!(lib.exists(), "staticlib not found at {}", lib.display());
    println!("linking {}", lib.display());
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let build = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(&manifest)
        .arg(&src)
        .arg(&lib)
        .arg("-o")
        .arg(&out)
        // What a hosted Rust staticlib needs from the C side (std's runtime pieces).
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"])
        .output()
        .expect("running the C compiler");
    assert!(
        build.status.success(),
        "compiling ffi_test.c failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    out
}

fn run(mode: &str) {
    let exe = build(&format!("ffi_test_{mode}"));
    let run = Command::new(&exe)
        .arg(mode)
        .output()
        .expect("running ffi_test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.lines().any(|l| l.starts_with("ok ")),
        "ffi_test ran no check"
    );
    assert!(
        run.status.success(),
        "ffi_test {mode} failed (exit {:?}); see its output above",
        run.status.code()
    );

    // Under valgrind too, when it is installed: the glue's pointer handling (the Rust side is not
    // instrumented by a C sanitizer) and leaks. DMIRROR_FFI_VALGRIND=0 skips it.
    let wanted = std::env::var("DMIRROR_FFI_VALGRIND").map_or(true, |v| v != "0");
    let have = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(wanted && have) {
        println!("valgrind run skipped (installed: {have})");
        return;
    }
    let vg = Command::new("valgrind")
        .args([
            "--error-exitcode=97",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "-q",
        ])
        .arg(&exe)
        .arg(mode)
        .output()
        .expect("running valgrind");
    assert!(
        vg.status.success(),
        "ffi_test {mode} under valgrind failed (exit {:?}):\n{}",
        vg.status.code(),
        String::from_utf8_lossy(&vg.stderr)
    );
}

/// The scenario with the in-memory region log.
#[test]
fn c_program_drives_a_mirror_through_the_header() {
    run("core");
}

/// The same scenario with metadata on the legs (superblocks and bitmaps written as META leg I/Os).
#[test]
fn c_program_drives_a_mirror_with_metadata_on_the_legs() {
    run("onlegs");
}
