//! End-to-end tests of `dmirror` with real clients (qemu-io from qemu-utils).
//!
//! Each test skips with a loud message when qemu-io is absent; CI installs qemu-utils.
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dmirror");
const MIB: u64 = 1 << 20;

fn have_qemu_io() -> bool {
    let ok = Command::new("qemu-io")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("\n**********************************************************************");
        eprintln!("*** SKIPPED: qemu-io not found; install qemu-utils to run this test ***");
        eprintln!("**********************************************************************\n");
    }
    ok
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("dmirror-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn file(&self, name: &str, size: u64) -> String {
        let p = self.0.join(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        p.display().to_string()
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a command with a time limit; a hang is a test failure, not a stuck CI. Its output is
/// drained while it runs (a full pipe must not stall it).
fn run_limit(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let o = out.join().unwrap();
            let e = err.join().unwrap();
            panic!(
                "command timed out after {secs}s: {cmd:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn dm(args: &[&str]) -> Output {
    run_limit(Command::new(BIN).args(args), 120)
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): stdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn qemu_io(url: &str, cmds: &[String], secs: u64) -> String {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", url]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let o = run_limit(&mut c, secs);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    out
}

fn qemu_io_ok(url: &str, cmds: &[&str]) {
    let cmds: Vec<String> = cmds.iter().map(|s| s.to_string()).collect();
    let out = qemu_io(url, &cmds, 120);
    assert!(
        !out.contains("failed") && !out.contains("error") && !out.contains("Pattern verification"),
        "qemu-io reported a problem:\n{out}"
    );
}

struct Server {
    child: Child,
    url: String,
    control: String,
}

impl Server {
    fn start(dir: &Dir, transport: &[&str], legs: &[&str], extra: &[&str]) -> Server {
        let control = dir.path("control.sock");
        let mut c = Command::new(BIN);
        c.arg("serve")
            .args(transport)
            .args(["--control", &control])
            .args(extra)
            .args(legs);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn dmirror serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(i) = line.find(" on nbd") {
                        break line[i + 4..].trim().to_string();
                    }
                }
                Err(_) => {
                    if let Some(st) = child.try_wait().unwrap() {
                        panic!("dmirror serve exited early: {st:?}");
                    }
                    assert!(Instant::now() < deadline, "dmirror serve did not start");
                }
            }
        };
        Server {
            child,
            url,
            control,
        }
    }

    fn status(&self) -> Value {
        let o = dm(&["status", "--control", &self.control, "--json"]);
        serde_json::from_str(&ok(&o)).expect("status JSON")
    }

    /// SIGTERM, then a clean exit within the limit.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "dmirror serve did not shut down cleanly: {st:?}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dmirror serve did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn label(legs: &[&str]) {
    ok(&dm(&[&["label", "--region-size", "1M"][..], legs].concat()));
}

fn check_identical(legs: &[&str]) {
    let o = dm(&[&["check"][..], legs].concat());
    let out = ok(&o);
    assert!(out.contains("identical"), "{out}");
}

fn inspect(leg: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(&dm(&["inspect", "--json", leg]))).unwrap();
    v[0].clone()
}

/// Wait until `f(status)` holds.
fn wait_status(s: &Server, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = s.status();
        if f(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leg_state(st: &Value, i: usize) -> String {
    st["legs"][i]["state"].as_str().unwrap_or("").to_string()
}

#[test]
fn qemu_io_over_tcp_and_unix_then_legs_identical() {
    if !have_qemu_io() {
        return;
    }
    let d = Dir::new("rw");
    let a = d.file("a.img", 64 * MIB);
    let b = d.file("b.img", 64 * MIB);
    label(&[&a, &b]);

    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a, &b], &[]);
    assert!(s.url.starts_with("nbd://127.0.0.1:"), "{}", s.url);
    qemu_io_ok(
        &s.url,
        &[
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            "write -P 0x5a 10M 1M",
            "write -f -P 0x3c 20M 4k",
            "flush",
            "read -P 0x5a 10M 1M",
            "read -P 0x3c 20M 4k",
            "read -P 0 30M 64k",
        ],
    );
    let st = s.status();
    assert_eq!(leg_state(&st, 0), "in-sync", "{st:#}");
    assert_eq!(leg_state(&st, 1), "in-sync", "{st:#}");
    s.stop();
    check_identical(&[&a, &b]);
    assert_eq!(inspect(&a)["clean"], true);

    let sock = d.path("nbd.sock");
    let s = Server::start(&d, &["--socket", &sock], &[&a, &b], &[]);
    assert!(s.url.starts_with("nbd+unix:///?socket="), "{}", s.url);
    qemu_io_ok(
        &s.url,
        &[
            "read -P 0xab 0 64k",
            "write -P 0xcd 0 64k",
            "aio_write -P 0x11 40M 128k",
            "aio_write -P 0x22 41M 128k",
            "aio_flush",
            "discard 50M 1M",
            "read -P 0xcd 0 64k",
            "read -P 0x11 40M 128k",
            "read -P 0x22 41M 128k",
        ],
    );
    s.stop();
    check_identical(&[&a, &b]);
    let raw = std::fs::read(&a).unwrap();
    assert!(raw[..65536].iter().all(|x| *x == 0xcd));
    assert!(raw[(10 * MIB) as usize..(11 * MIB) as usize]
        .iter()
        .all(|x| *x == 0x5a));
}

/// The legs' bytes, to prove a refused command wrote nothing.
fn snapshot(paths: &[&str]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn refused(args: &[&str], expect: &str) {
    let o = dm(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got: {err}");
    assert!(lines[0].starts_with("dmirror: "), "{err}");
    assert!(
        lines[0].contains(expect),
        "{args:?}: expected '{expect}' in: {err}"
    );
}

#[test]
fn bad_input_one_clear_line_and_nothing_written() {
    // No qemu needed.
    let d = Dir::new("bad");
    let a = d.file("a.img", 16 * MIB);
    let b = d.file("b.img", 16 * MIB);
    let c = d.file("c.img", 16 * MIB);
    let e = d.file("e.img", 16 * MIB);
    let big = d.file("big.img", 32 * MIB);
    let tiny = d.file("tiny.img", 8192);
    label(&[&a, &b]);
    label(&[&c, &e]);
    let all = [&a[..], &b, &c, &e, &big, &tiny];
    let before = snapshot(&all);
    let missing = d.path("missing.img");

    refused(&["label", &a, &missing], "missing.img");
    refused(&["label", &a, &b], "already carries dmirror metadata");
    refused(&["label", &big, &tiny], "differ in size");
    refused(&["label", &tiny], "too small");
    refused(&["label", "/proc/version"], "too small");
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        let ro = d.file("ro.img", 16 * MIB);
        std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
        refused(&["label", &ro], "Permission denied");
    }
    refused(&["inspect", &big], "no dmirror metadata");
    refused(&["check", &a, &c], "another mirror");
    refused(&["resync", &a, &c], "another mirror");
    refused(
        &["serve", "--listen", "127.0.0.1:0", &a, &missing],
        "missing.img",
    );
    refused(
        &["serve", "--listen", "127.0.0.1:0", &a, &c],
        "another mirror",
    );
    refused(
        &["serve", "--listen", "127.0.0.1:0", &big],
        "no dmirror metadata",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = format!("127.0.0.1:{}", busy.local_addr().unwrap().port());
    refused(&["serve", "--listen", &port, &a, &b], "cannot listen");
    refused(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "/nonexistent-dir/x.sock",
            &a,
            &b,
        ],
        "control socket",
    );
    refused(
        &["status", "--control", &d.path("nobody.sock")],
        "cannot reach",
    );
    refused(&["frobnicate"], "unknown command");
    assert!(snapshot(&all) == before, "a refused command changed a leg");

    // Corrupt metadata: flip a byte inside both superblock slots of b.
    let offs = inspect(&b)["superblock_offsets"].clone();
    let mut raw = std::fs::read(&b).unwrap();
    for o in offs.as_array().unwrap() {
        let o = o.as_u64().unwrap() as usize;
        raw[o + 40] ^= 0xff;
    }
    std::fs::write(&b, &raw).unwrap();
    let before = snapshot(&[&a, &b]);
    refused(&["inspect", &b], "corrupt");
    refused(&["serve", "--listen", "127.0.0.1:0", &a, &b], "corrupt");
    refused(&["check", &a, &b], "corrupt");
    refused(&["label", &b], "corrupt");
    assert!(
        snapshot(&[&a, &b]) == before,
        "a refused command changed a leg"
    );

    // --use-smallest says what it does.
    let o = dm(&["label", "--use-smallest", &c, &big, "--force"]);
    let out = ok(&o);
    assert!(out.contains("smallest"), "{out}");
}

/// A workload of distinct 64 KiB writes with a flush (and a marker read after it) every 8 writes.
fn workload(n: usize, base: u64) -> Vec<String> {
    let mut v = Vec::new();
    for k in 0..n {
        let off = base + k as u64 * 65536;
        v.push(format!("write -P {} {off} 64k", pattern(k)));
        if k % 8 == 7 {
            v.push("flush".into());
            // A marker: it prints only after the flush before it returned.
            v.push("read 0 512".into());
        }
    }
    v
}

fn pattern(k: usize) -> u8 {
    (k % 250) as u8 + 1
}

#[test]
fn kill9_mid_workload_then_restart_and_resync() {
    if !have_qemu_io() {
        return;
    }
    let d = Dir::new("kill");
    let a = d.file("a.img", 128 * MIB);
    let b = d.file("b.img", 128 * MIB);
    label(&[&a, &b]);
    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a, &b], &[]);
    let url = s.url.clone();
    let n = 1200;
    let base = 8 * MIB;
    let cmds = workload(n, base);
    let client = std::thread::spawn(move || qemu_io(&url, &cmds, 300));
    // Kill once a third of the workload is acknowledged.
    wait_status(&s, "the workload to get going", 60, |st| {
        st["counters"]["parent_writes"].as_u64().unwrap_or(0) >= n as u64 / 3
    });
    s.kill9();
    let out = client.join().unwrap();

    // Walk qemu-io's output: a write is safe once a flush after it completed (the marker read
    // that follows the flush printed "read 512/512").
    let mut acked = 0usize;
    let mut safe = 0usize;
    let mut flush_failed = false;
    for line in out.lines() {
        if line.starts_with("wrote 65536/65536") {
            acked += 1;
        } else if line.contains("flush failed") {
            flush_failed = true;
        } else if line.starts_with("read 512/512") && !flush_failed {
            safe = acked;
        } else if line.contains("failed") {
            flush_failed = true;
        }
    }
    eprintln!("kill -9 after {acked} acknowledged writes, {safe} of them flushed");
    assert!(
        safe > 0,
        "the workload did not get going before the kill:\n{out}"
    );

    let ia = inspect(&a);
    let ib = inspect(&b);
    let regions = ia["regions"].as_u64().unwrap();
    let dirty = ia["dirty_regions"]
        .as_u64()
        .unwrap()
        .max(ib["dirty_regions"].as_u64().unwrap());
    eprintln!(
        "after the crash: clean={} {}, dirty regions {dirty} of {regions}",
        ia["clean"], ib["clean"]
    );
    assert!(
        ia["clean"] == false || ib["clean"] == false,
        "a killed server left the legs marked clean"
    );
    assert!(
        dirty < regions,
        "every region dirty: the write-intent bitmap is not doing its job"
    );

    let o = dm(&["resync", &a, &b]);
    let out = ok(&o);
    eprintln!("{out}");
    let resynced: u64 = out
        .split_whitespace()
        .skip_while(|w| *w != "bytes,")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        resynced <= dirty,
        "resynced {resynced} regions but only {dirty} were dirty"
    );
    check_identical(&[&a, &b]);
    assert_eq!(inspect(&a)["clean"], true);

    // Every write flushed before the crash is intact; every other write is old or new data,
    // sector by sector.
    let raw = std::fs::read(&a).unwrap();
    for k in 0..n {
        let off = (base + k as u64 * 65536) as usize;
        let data = &raw[off..off + 65536];
        if k < safe {
            assert!(
                data.iter().all(|x| *x == pattern(k)),
                "flushed write {k} lost"
            );
        } else {
            for sec in data.chunks(512) {
                let first = sec[0];
                assert!(
                    first == 0 || first == pattern(k),
                    "write {k} has foreign data"
                );
                assert!(
                    sec.iter().all(|x| *x == first),
                    "write {k} torn inside a sector"
                );
            }
        }
    }
    // And a restarted server serves it.
    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a, &b], &[]);
    let k = safe - 1;
    let off = base + k as u64 * 65536;
    qemu_io_ok(&s.url, &[&format!("read -P {} {off} 64k", pattern(k))]);
    s.stop();
}

#[test]
fn error_leg_fails_and_workload_goes_on() {
    if !have_qemu_io() {
        return;
    }
    let d = Dir::new("err");
    let a = d.file("a.img", 64 * MIB);
    let b = d.file("b.img", 64 * MIB);
    label(&[&a, &b]);
    let eb = format!("error:{b}");
    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a, &eb], &[]);
    qemu_io_ok(
        &s.url,
        &[
            "write -P 0x77 0 1M",
            "flush",
            "read -P 0x77 0 1M",
            "write -P 0x78 5M 64k",
            "flush",
        ],
    );
    let st = wait_status(&s, "leg 1 failed", 10, |st| leg_state(st, 1) == "failed");
    assert_eq!(leg_state(&st, 0), "in-sync");
    assert!(st["legs"][1]["errors"].as_u64().unwrap() > 0, "{st:#}");
    // Add it back (the device works now): a failed leg gets a full resync.
    let o = dm(&["add", "--control", &s.control, &b]);
    let out = ok(&o);
    assert!(out.contains("full"), "{out}");
    wait_status(&s, "leg 1 in sync", 60, |st| leg_state(st, 1) == "in-sync");
    s.stop();
    check_identical(&[&a, &b]);
}

#[test]
fn flakey_leg_comes_back_and_only_tracked_regions_resync() {
    if !have_qemu_io() {
        return;
    }
    let d = Dir::new("flakey");
    let a = d.file("a.img", 64 * MIB);
    let b = d.file("b.img", 64 * MIB);
    label(&[&a, &b]);
    let region = inspect(&a)["region_sectors"].as_u64().unwrap();
    assert_eq!(region * 512, MIB);
    // Up 2 s, then down for an hour.
    let fb = format!("flakey:{b}:2:3600");
    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a, &fb], &[]);
    qemu_io_ok(&s.url, &["write -P 0x01 0 4M", "flush"]);
    std::thread::sleep(Duration::from_millis(2500));
    // While leg 1 is down: 3 regions written (7M, 9M-10M spans two).
    qemu_io_ok(
        &s.url,
        &[
            "write -P 0x02 7M 64k",
            "write -P 0x03 9M 1M",
            "write -P 0x04 9M 4k",
            "flush",
        ],
    );
    qemu_io_ok(
        &s.url,
        &[
            "write -P 0x05 10M 512",
            "flush",
            "read -P 0x04 9M 4k",
            "read -P 0x03 9220k 60k",
        ],
    );
    let st = wait_status(&s, "leg 1 out", 10, |st| {
        matches!(leg_state(st, 1).as_str(), "missing" | "failed")
    });
    assert_eq!(
        leg_state(&st, 1),
        "missing",
        "a device that vanished is missing, not failed: {st:#}"
    );
    let before = st["counters"]["resync_sectors"].as_u64().unwrap();
    let o = dm(&["add", "--control", &s.control, &b]);
    let out = ok(&o);
    assert!(out.contains("incremental"), "{out}");
    let st = wait_status(&s, "leg 1 in sync", 60, |st| leg_state(st, 1) == "in-sync");
    let copied = st["counters"]["resync_sectors"].as_u64().unwrap() - before;
    eprintln!(
        "incremental resync copied {copied} sectors ({} regions)",
        copied as f64 / region as f64
    );
    assert_eq!(
        copied,
        3 * region,
        "the 3 regions written while away (7, 9, 10) and nothing else"
    );
    s.stop();
    check_identical(&[&a, &b]);
}

#[test]
fn stale_leg_refused_without_force() {
    if !have_qemu_io() {
        return;
    }
    let d = Dir::new("stale");
    let a = d.file("a.img", 64 * MIB);
    let b = d.file("b.img", 64 * MIB);
    label(&[&a, &b]);
    let fb = format!("flakey:{b}:1:3600");
    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a, &fb], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    qemu_io_ok(&s.url, &["write -P 0x09 3M 64k", "flush"]);
    wait_status(&s, "leg 1 out", 10, |st| leg_state(st, 1) != "in-sync");
    s.stop();
    let before = snapshot(&[&a, &b]);
    refused(&["serve", "--listen", "127.0.0.1:0", &a, &b], "stale");
    refused(&["resync", &a, &b], "stale");
    assert!(
        snapshot(&[&a, &b]) == before,
        "a refused command changed a leg"
    );
    let o = dm(&["check", &a, &b]);
    assert_eq!(o.status.code(), Some(1), "check must see the legs differ");
    let out = ok(&dm(&["resync", "--force", &a, &b]));
    // Only the one region written while leg 1 was away (3M) is copied.
    assert!(out.contains(&format!("({MIB} bytes, 1 regions")), "{out}");
    check_identical(&[&a, &b]);
}

#[test]
fn one_leg_mirror_takes_a_second_leg() {
    if !have_qemu_io() {
        return;
    }
    let d = Dir::new("grow");
    let a = d.file("a.img", 32 * MIB);
    let b = d.file("b.img", 32 * MIB);
    label(&[&a]);
    let s = Server::start(&d, &["--listen", "127.0.0.1:0"], &[&a], &[]);
    qemu_io_ok(&s.url, &["write -P 0x61 1M 2M", "flush"]);
    let st = s.status();
    assert_eq!(leg_state(&st, 1), "empty", "{st:#}");
    let out = ok(&dm(&["add", "--control", &s.control, &b]));
    assert!(out.contains("leg 1") && out.contains("full"), "{out}");
    wait_status(&s, "leg 1 in sync", 60, |st| leg_state(st, 1) == "in-sync");
    // Writes during and after the rebuild reach both legs.
    qemu_io_ok(
        &s.url,
        &["write -P 0x62 8M 64k", "flush", "read -P 0x61 1M 2M"],
    );
    s.stop();
    check_identical(&[&a, &b]);
}

#[test]
fn interrupted_rebuild_resumes_from_its_checkpoint() {
    let d = Dir::new("resume");
    let a = d.file("a.img", 64 * MIB);
    let b = d.file("b.img", 64 * MIB);
    ok(&dm(&["label", "--resync", "--region-size", "256k", &a, &b]));
    // Data on leg 0 only (the metadata at the end stays).
    let f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0x5au8; (60 * MIB) as usize], 0).unwrap();
    drop(f);
    // Copy at 16 MB/s and stop it after about a second.
    let child = Command::new(BIN)
        .args(["resync", "--resync-rate", "16M", &a, &b])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("resync stopped after copying"), "{err}");
    let ck = inspect(&a)["legs"][1]["rebuild_checkpoint"]
        .as_u64()
        .unwrap();
    let regions = inspect(&a)["regions"].as_u64().unwrap();
    eprintln!("checkpoint {ck} of {regions} regions");
    assert!(ck > 0 && ck < regions, "checkpoint {ck} of {regions}");
    let out = ok(&dm(&["resync", &a, &b]));
    let copied: u64 = out
        .split_whitespace()
        .skip_while(|w| *w != "bytes,")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap();
    assert_eq!(
        copied,
        regions - ck,
        "the resumed rebuild copies what is past the checkpoint: {out}"
    );
    check_identical(&[&a, &b]);
}
