//! Builds `tests/ffi/ffi_test.c` with the system C compiler, links it with this crate's
//! staticlib, and runs it: the C program drives a mirror only through `dmirror.h` (writes,
//! reads, a leg failure, a resync) with legs emulated in memory and exits non-zero if any of its
//! checks failed. Needs a C compiler (`cc`, or `$CC`).
use std::path::{Path, PathBuf};
use std::process::Command;

/// The staticlib cargo built next to this test binary (target/<profile>/libdmirror_ffi.a).
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/c_abi-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join("libdmirror_ffi.a")
}

#[test]
fn c_program_drives_a_mirror_through_the_header() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../tests/ffi/ffi_test.c");
    let lib = staticlib();
    assert!(lib.exists(), "staticlib not found at {}", lib.display());
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi_test");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());

    let build = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(&manifest)
        .arg(&src)
        .arg(&lib)
        .args(["-o"])
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

    let run = Command::new(&out).output().expect("running ffi_test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.lines().any(|l| l.starts_with("ok ")),
        "ffi_test ran no check"
    );
    assert!(
        run.status.success(),
        "ffi_test failed (exit {:?}); see its output above",
        run.status.code()
    );
}
