//! Builds `tests/ffi/dm_test.c` with the system C compiler, links it with this crate's
//! staticlib and runs it: the C program drives the device-mapper table entry points of
//! `dmirror_dm.h` (parse good and malformed tables, check devices, print tables and status lines,
//! parse messages) and exits non-zero if any check failed. Needs a C compiler (`cc`, or `$CC`).
use std::path::{Path, PathBuf};
use std::process::Command;

fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/dm_c_abi-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join("libdmirror_ffi.a")
}

#[test]
fn c_program_drives_the_dm_table_entry_points() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../tests/ffi/dm_test.c");
    let lib = staticlib();
    assert!(lib.exists(), "staticlib not found at {}", lib.display());
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dm_test");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());

    let build = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(&manifest)
        .arg(&src)
        .arg(&lib)
        .args(["-o"])
        .arg(&out)
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"])
        .output()
        .expect("running the C compiler");
    assert!(
        build.status.success(),
        "compiling dm_test.c failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let run = Command::new(&out).output().expect("running dm_test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(passed >= 50, "dm_test ran only {passed} passing checks");
    assert!(
        run.status.success(),
        "dm_test failed (exit {:?}); see its output above",
        run.status.code()
    );
}
