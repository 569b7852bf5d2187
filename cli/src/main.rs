//! `dmirror`: label, inspect, check, resync and serve a dmirror mirror from userland.
mod control;
mod dev;
mod engine;
mod meta;
mod nbd;

use dev::{uuid_str, Dev, Fault, LegSpec};
use dmirror::{LegState, Mirror};
use engine::{state_name, Engine, Mode, Msg, UHost};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::channel;
use std::time::Instant;

const USAGE: &str = "usage:
  dmirror label [--name N] [--region-size S] [--size S] [--slots N] [--force] [--use-smallest] [--resync] LEG...
  dmirror inspect [--json] LEG...
  dmirror check LEG...
  dmirror resync [--force] [--winner LEG] [--resync-rate BYTES/S] LEG...
  dmirror serve [--listen ADDR:PORT | --socket PATH] [--control PATH] [--force]
                [--winner LEG] [--io-threads N] [--name EXPORT]
                [--read-policy P] [--resync-rate BYTES/S] [LEG...]
  dmirror status [--control PATH] [--json]
  dmirror add [--control PATH] [--force] LEG
  dmirror remove [--control PATH] LEG
  dmirror fail [--control PATH] LEG
A LEG is a file or block device, or error:PATH / flakey:PATH:UP:DOWN for tests.
See dmirror(8).";

/// Exit status for errors (check uses 1 for \"legs differ\").
const EXIT_ERR: u8 = 2;

struct Args {
    flags: Vec<String>,
    opts: Vec<(String, String)>,
    pos: Vec<String>,
}

impl Args {
    /// Split `argv` given which options take a value and which are plain flags.
    fn parse(argv: &[String], with_value: &[&str], flags: &[&str]) -> Result<Args, String> {
        let mut a = Args {
            flags: vec![],
            opts: vec![],
            pos: vec![],
        };
        let mut i = 0;
        let mut only_pos = false;
        while i < argv.len() {
            let s = &argv[i];
            if only_pos || !s.starts_with("--") {
                a.pos.push(s.clone());
            } else if s == "--" {
                only_pos = true;
            } else {
                let (name, inline) = match s.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (s.clone(), None),
                };
                if with_value.contains(&name.as_str()) {
                    let v = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            argv.get(i)
                                .cloned()
                                .ok_or_else(|| format!("option {name} needs a value"))?
                        }
                    };
                    a.opts.push((name, v));
                } else if flags.contains(&name.as_str()) && inline.is_none() {
                    a.flags.push(name);
                } else {
                    return Err(format!("unknown option {s}"));
                }
            }
            i += 1;
        }
        Ok(a)
    }
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    fn opt(&self, o: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| n == o)
            .map(|(_, v)| v.as_str())
    }
}

fn main() -> ExitCode {
    // I/O buffers of up to 32 MiB come and go all the time: keep them in the heap instead of
    // mmap/munmap (and page-faulting) every one.
    // SAFETY: mallopt only tunes the allocator; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(EXIT_ERR);
    };
    let rest = &argv[1..];
    let r = match cmd.as_str() {
        "label" => cmd_label(rest),
        "inspect" => cmd_inspect(rest),
        "check" => cmd_check(rest),
        "resync" => cmd_resync(rest),
        "serve" => cmd_serve(rest),
        "status" | "add" | "remove" | "fail" => cmd_control(cmd, rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => Err(format!("unknown command '{other}' (try dmirror help)")),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("dmirror: {e}");
            ExitCode::from(EXIT_ERR)
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let mul = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                "s" => 512,
                _ => return Err(format!("bad size '{s}' (use bytes or a k/M/G suffix)")),
            };
            (&t[..i], mul)
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size '{s}'"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

fn human(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn legs_from(pos: &[String]) -> Result<Vec<LegSpec>, String> {
    if pos.is_empty() {
        return Err("no legs given".into());
    }
    let specs: Vec<LegSpec> = pos
        .iter()
        .map(|p| LegSpec::parse(p))
        .collect::<Result<_, _>>()?;
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            let same = match (
                std::fs::canonicalize(&a.path),
                std::fs::canonicalize(&b.path),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => a.path == b.path,
            };
            if same {
                return Err(format!("leg {} is given twice", a.path.display()));
            }
        }
    }
    Ok(specs)
}

fn open_all(specs: &[LegSpec], write: bool) -> Result<Vec<Dev>, String> {
    specs.iter().map(|s| Dev::open(s, write)).collect()
}

// ---- label ---------------------------------------------------------------------------------

fn cmd_label(argv: &[String]) -> Result<u8, String> {
    let a = Args::parse(
        argv,
        &["--name", "--region-size", "--size", "--slots"],
        &["--force", "--use-smallest", "--resync"],
    )?;
    let specs = legs_from(&a.pos)?;
    let devs = open_all(&specs, true)?;
    let name = a.opt("--name").unwrap_or("dmirror").to_string();
    if name.len() > 32 {
        return Err(format!("name '{name}' is longer than 32 bytes"));
    }
    let o = LabelOpts {
        region: a.opt("--region-size"),
        slots: a.opt("--slots"),
        size: a.opt("--size"),
        force: a.flag("--force"),
        use_smallest: a.flag("--use-smallest"),
        resync: a.flag("--resync"),
        quiet: false,
    };
    label_devs(&devs, &name, &o)?;
    Ok(0)
}

/// Leg slots a mirror gets by default: a one-leg mirror can take a second leg with `add`.
const DEFAULT_SLOTS: usize = 2;

struct LabelOpts<'a> {
    region: Option<&'a str>,
    slots: Option<&'a str>,
    size: Option<&'a str>,
    force: bool,
    use_smallest: bool,
    resync: bool,
    quiet: bool,
}

fn label_devs(devs: &[Dev], name: &str, o: &LabelOpts) -> Result<(), String> {
    let LabelOpts {
        region,
        slots,
        size,
        force,
        use_smallest,
        resync,
        quiet,
    } = *o;
    if devs.len() > dmirror::MAX_LEGS {
        return Err(format!("at most {} legs", dmirror::MAX_LEGS));
    }
    for d in devs {
        if d.fault != Fault::None {
            return Err(format!(
                "{}: fault injection is for serve only; label the plain path",
                d.name
            ));
        }
        match meta::probe(d) {
            Ok(None) => {}
            Ok(Some(m)) if !force => {
                return Err(format!(
                    "{} already carries dmirror metadata (mirror {}, name '{}'); pass --force to overwrite it",
                    d.name,
                    uuid_str(&m.label.mirror_uuid),
                    m.label.name
                ))
            }
            Err(e) if !force => {
                return Err(format!("{e}; pass --force to overwrite it"));
            }
            _ => {}
        }
    }
    let smallest = devs.iter().map(|d| d.bytes).min().unwrap_or(0);
    let largest = devs.iter().map(|d| d.bytes).max().unwrap_or(0);
    if smallest != largest && !use_smallest {
        let sizes: Vec<String> = devs
            .iter()
            .map(|d| format!("{} is {} bytes", d.name, d.bytes))
            .collect();
        return Err(format!(
            "legs differ in size ({}); pass --use-smallest to mirror only as much as the smallest leg holds",
            sizes.join(", ")
        ));
    }
    let region_sectors = match region {
        Some(s) => {
            let b = parse_size(s)?;
            if b < 4096 || !b.is_power_of_two() {
                return Err(format!(
                    "region size {s} must be a power of two of at least 4 KiB"
                ));
            }
            b / 512
        }
        None => meta::default_region_sectors(smallest, 512),
    };
    let Some(data_sectors) = meta::max_data_sectors(smallest, 512, region_sectors) else {
        let d = devs
            .iter()
            .find(|d| d.bytes == smallest)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        return Err(format!(
            "leg {d} is too small ({smallest} bytes) to hold the metadata"
        ));
    };
    if data_sectors < region_sectors {
        let d = devs
            .iter()
            .find(|d| d.bytes == smallest)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        return Err(format!(
            "leg {d} is too small ({smallest} bytes) for one {}-byte region",
            region_sectors * 512
        ));
    }
    let data_sectors = match size {
        None => data_sectors,
        Some(sz) => {
            let b = parse_size(sz)?;
            if b == 0 || b % 512 != 0 {
                return Err(format!(
                    "size {sz} must be a non-zero multiple of 512 bytes"
                ));
            }
            if b / 512 > data_sectors {
                return Err(format!(
                    "size {sz} does not fit: the legs hold at most {} bytes of data",
                    data_sectors * 512
                ));
            }
            b / 512
        }
    };
    if smallest != largest && !quiet && size.is_none() {
        println!(
            "using the smallest leg's size: {} of data on each leg; larger legs keep their extra space unused",
            human(data_sectors * 512)
        );
    }
    let slots = match slots {
        None => devs.len().max(DEFAULT_SLOTS),
        Some(t) => {
            let n: usize = t
                .parse()
                .map_err(|_| format!("--slots {t}: not a number"))?;
            if n < devs.len() || n > dmirror::MAX_LEGS {
                return Err(format!(
                    "--slots {n}: must be between the number of legs ({}) and {}",
                    devs.len(),
                    dmirror::MAX_LEGS
                ));
            }
            n
        }
    };
    meta::write_labels(devs, name, region_sectors, data_sectors, resync, slots)?;
    if !quiet {
        println!(
            "labelled {} legs as mirror '{name}': {} of data, {} regions",
            devs.len(),
            human(data_sectors * 512),
            human(region_sectors * 512)
        );
    }
    Ok(())
}

// ---- inspect -------------------------------------------------------------------------------

fn bitmap_ranges(b: &[u8], regions: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in 0..regions {
        let set = b
            .get((r / 8) as usize)
            .is_some_and(|x| x & (1 << (r % 8)) != 0);
        if set {
            match out.last_mut() {
                Some((_, end)) if *end == r => *end = r + 1,
                _ => out.push((r, r + 1)),
            }
        }
    }
    out
}

fn ranges_str(r: &[(u64, u64)]) -> String {
    let v: Vec<String> = r
        .iter()
        .take(16)
        .map(|(a, b)| {
            if b - a == 1 {
                format!("{a}")
            } else {
                format!("{a}-{}", b - 1)
            }
        })
        .collect();
    let more = if r.len() > 16 {
        format!(" ... ({} ranges)", r.len())
    } else {
        String::new()
    };
    format!("{}{more}", v.join(","))
}

fn meta_json(d: &Dev, m: &meta::LegMeta) -> Value {
    let l = &m.label;
    let regions = l.regions();
    let legs: Vec<Value> = (0..usize::from(l.legs))
        .map(|i| {
            let tr = m.tracking.get(i).and_then(|t| t.as_ref());
            json!({
                "index": i,
                "uuid": uuid_str(&l.leg_uuids[i]),
                "state": state_name(l.leg_states[i]),
                "rebuild_checkpoint": l.rebuild[i].checkpoint,
                "rebuild_full": l.rebuild[i].full,
                "tracked_regions": tr.map(|t| meta::count_bits(t)).unwrap_or(0),
            })
        })
        .collect();
    json!({
        "device": d.name,
        "device_bytes": d.bytes,
        "format_version": l.version,
        "mirror_uuid": uuid_str(&l.mirror_uuid),
        "name": l.name,
        "leg_uuid": uuid_str(&l.leg_uuid),
        "leg_index": l.index,
        "generation": l.generation,
        "seq": l.seq,
        "slot": m.slot,
        "superblock_offsets": meta::slot_offsets(d.bytes, l.sector_size),
        "clean": l.clean,
        "authoritative": l.authoritative,
        "sector_size": l.sector_size,
        "region_sectors": l.region_sectors,
        "data_sectors": l.data_sectors,
        "regions": regions,
        "dirty_regions": meta::count_bits(&m.dirty),
        "dirty": bitmap_ranges(&m.dirty, regions).iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "legs": legs,
    })
}

fn print_meta(d: &Dev, m: &meta::LegMeta) {
    let l = &m.label;
    let regions = l.regions();
    let ss = u64::from(l.sector_size);
    println!("{}:", d.name);
    println!("  mirror        {} '{}'", uuid_str(&l.mirror_uuid), l.name);
    println!(
        "  this leg      {} (leg {} of {})",
        uuid_str(&l.leg_uuid),
        l.index,
        l.legs
    );
    println!(
        "  generation    {} (superblock seq {}, slot {})",
        l.generation, l.seq, m.slot
    );
    println!(
        "  shutdown      {}",
        if l.clean {
            "clean"
        } else {
            "UNCLEAN (dirty regions will be resynced)"
        }
    );
    println!(
        "  data          {} ({} sectors of {} bytes)",
        human(l.data_sectors * ss),
        l.data_sectors,
        ss
    );
    println!(
        "  regions       {} of {}",
        regions,
        human(l.region_sectors * ss)
    );
    let dirty = bitmap_ranges(&m.dirty, regions);
    let nd = meta::count_bits(&m.dirty);
    if nd == 0 {
        println!("  dirty         none");
    } else {
        println!("  dirty         {nd} regions: {}", ranges_str(&dirty));
    }
    println!("  authoritative leg {}", l.authoritative);
    for i in 0..usize::from(l.legs) {
        let mut extra = String::new();
        if l.leg_states[i] == LegState::Rebuilding {
            extra = format!(
                ", rebuild {} at region {}",
                if l.rebuild[i].full {
                    "full"
                } else {
                    "incremental"
                },
                l.rebuild[i].checkpoint
            );
        }
        if let Some(Some(t)) = m.tracking.get(i) {
            extra.push_str(&format!(
                ", {} regions written while away: {}",
                meta::count_bits(t),
                ranges_str(&bitmap_ranges(t, regions))
            ));
        }
        let me = if i == usize::from(l.index) {
            " (this leg)"
        } else {
            ""
        };
        println!(
            "  leg {i}         {} {}{me}{extra}",
            uuid_str(&l.leg_uuids[i]),
            state_name(l.leg_states[i])
        );
    }
}

fn cmd_inspect(argv: &[String]) -> Result<u8, String> {
    let a = Args::parse(argv, &[], &["--json"])?;
    let specs = legs_from(&a.pos)?;
    let devs = open_all(&specs, false)?;
    let mut metas = Vec::new();
    for d in &devs {
        match meta::probe(d)? {
            Some(m) => metas.push(m),
            None => return Err(format!("{}: no dmirror metadata", d.name)),
        }
    }
    if a.flag("--json") {
        let v: Vec<Value> = devs
            .iter()
            .zip(&metas)
            .map(|(d, m)| meta_json(d, m))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(v)).unwrap_or_default()
        );
    } else {
        for (d, m) in devs.iter().zip(&metas) {
            print_meta(d, m);
        }
    }
    Ok(0)
}

// ---- check ---------------------------------------------------------------------------------

fn cmd_check(argv: &[String]) -> Result<u8, String> {
    let a = Args::parse(argv, &[], &["--json"])?;
    let specs = legs_from(&a.pos)?;
    if specs.len() < 2 {
        return Err("check needs at least two legs".into());
    }
    let devs = open_all(&specs, false)?;
    let mut metas = Vec::new();
    for d in &devs {
        match meta::probe(d)? {
            Some(m) => metas.push(m),
            None => return Err(format!("{}: no dmirror metadata", d.name)),
        }
    }
    for (d, m) in devs.iter().zip(&metas).skip(1) {
        if m.label.mirror_uuid != metas[0].label.mirror_uuid {
            return Err(format!(
                "legs of different mirrors: {} belongs to mirror {}, {} to another mirror ({})",
                devs[0].name,
                uuid_str(&metas[0].label.mirror_uuid),
                d.name,
                uuid_str(&m.label.mirror_uuid)
            ));
        }
    }
    let newest = metas
        .iter()
        .max_by_key(|m| m.label.generation)
        .map(|m| m.label.clone())
        .ok_or("no legs")?;
    let ss = u64::from(newest.sector_size);
    let total = newest.data_sectors * ss;
    for d in &devs {
        if d.bytes < total {
            return Err(format!(
                "{}: leg too small ({} bytes) for {} bytes of data",
                d.name, d.bytes, total
            ));
        }
    }
    let region = newest.region_sectors * ss;
    let chunk = region.min(1 << 20) as usize;
    let mut bufs: Vec<Vec<u8>> = devs.iter().map(|_| vec![0u8; chunk]).collect();
    // (first region, end region, which legs differ from leg 0)
    let mut diffs: Vec<(u64, u64, Vec<usize>)> = Vec::new();
    let mut off = 0u64;
    while off < total {
        let region_no = off / region;
        let len = (total - off).min(chunk as u64) as usize;
        for (d, b) in devs.iter().zip(bufs.iter_mut()) {
            d.read_at(&mut b[..len], off)?;
        }
        let differing: Vec<usize> = (1..devs.len())
            .filter(|&i| bufs[i][..len] != bufs[0][..len])
            .collect();
        if !differing.is_empty() {
            match diffs.last_mut() {
                Some((_, end, who)) if *end >= region_no => {
                    *end = region_no + 1;
                    for w in differing {
                        if !who.contains(&w) {
                            who.push(w);
                        }
                    }
                }
                _ => diffs.push((region_no, region_no + 1, differing)),
            }
        }
        off += len as u64;
    }
    if a.flag("--json") {
        let v: Vec<Value> = diffs
            .iter()
            .map(|(s, e, w)| {
                json!({
                    "first_region": s, "end_region": e,
                    "offset": s * region, "bytes": ((e * region).min(total)) - s * region,
                    "legs": std::iter::once(devs[0].name.clone()).chain(w.iter().map(|i| devs[*i].name.clone())).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"identical": diffs.is_empty(), "bytes_compared": total, "differences": v})
        );
    } else {
        for (s, e, w) in &diffs {
            let names: Vec<&str> = w.iter().map(|i| devs[*i].name.as_str()).collect();
            let end = (e * region).min(total);
            println!(
                "differ: bytes {}..{} (regions {}..{}, {}): {} vs {}",
                s * region,
                end,
                s,
                e - 1,
                human(end - s * region),
                devs[0].name,
                names.join(", ")
            );
        }
        if diffs.is_empty() {
            println!(
                "legs identical: {} compared on {} legs",
                human(total),
                devs.len()
            );
        } else {
            let n: u64 = diffs.iter().map(|(s, e, _)| e - s).sum();
            println!("legs differ in {n} regions of {}", human(region));
        }
    }
    Ok(if diffs.is_empty() { 0 } else { 1 })
}

// ---- assembly, shared by resync and serve --------------------------------------------------

struct Opened {
    devs: Vec<Dev>,
    asm: meta::Assembled,
}

fn open_and_assemble(
    specs: &[LegSpec],
    force: bool,
    winner: Option<&str>,
) -> Result<Opened, String> {
    let devs = open_all(specs, true)?;
    let mut metas = Vec::new();
    for d in &devs {
        match meta::probe(d)? {
            Some(m) => metas.push(m),
            None => {
                return Err(format!(
                    "{}: no dmirror metadata (label it first with dmirror label)",
                    d.name
                ))
            }
        }
    }
    let refs: Vec<&Dev> = devs.iter().collect();
    let winner = match winner {
        None => None,
        Some(w) => {
            let ws = LegSpec::parse(w)?;
            let found = specs.iter().position(|s| s.path == ws.path);
            Some(found.ok_or_else(|| format!("--winner {w} is not one of the legs given"))?)
        }
    };
    let asm = meta::assemble(&refs, &metas, force, winner)?;
    Ok(Opened { devs, asm })
}

/// Give the devices to their slots, in slot order.
fn devs_by_slot(o: Opened) -> (Vec<Option<Dev>>, meta::Assembled) {
    let mut devs: Vec<Option<Dev>> = o.devs.into_iter().map(Some).collect();
    let by_slot = o
        .asm
        .dev_of_slot
        .iter()
        .map(|i| i.and_then(|i| devs[i].take()))
        .collect();
    (by_slot, o.asm)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// A thread that turns the first SIGINT/SIGTERM into a clean shutdown and a second one into an
/// immediate exit. Signals must be blocked (in every thread) before threads are started.
fn signal_thread(set: libc::sigset_t, tx: std::sync::mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        let mut n = 0;
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set and `sig` a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                continue;
            }
            n += 1;
            if n == 1 {
                eprintln!("dmirror: shutting down (flushing legs, marking clean); signal again to quit at once");
                let _ = tx.send(Msg::Shutdown);
            } else {
                eprintln!("dmirror: quitting without a clean shutdown; dirty regions are resynced at the next start");
                std::process::exit(EXIT_ERR.into());
            }
        }
    });
}

struct Progress {
    tty: bool,
    last_print: Instant,
    first: Option<(u64, Instant)>,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            tty: std::io::stderr().is_terminal(),
            last_print: now,
            first: None,
        }
    }

    fn show(&mut self, st: &dmirror::Status, ss: u64, force: bool) {
        let (mut done, mut total) = (0u64, 0u64);
        for l in &st.leg[..usize::from(st.legs)] {
            if l.state == LegState::Rebuilding || l.resync_total > 0 {
                done += l.resync_done;
                total += l.resync_total;
            }
        }
        let (done, total) = (done * ss, total * ss);
        // The rate counts from the first status seen (a resumed rebuild starts part done).
        let (first, t0) = *self.first.get_or_insert((done, Instant::now()));
        let since = self.last_print.elapsed().as_millis();
        if !force && ((self.tty && since < 200) || (!self.tty && since < 2000)) {
            return;
        }
        self.last_print = Instant::now();
        let secs = t0.elapsed().as_secs_f64().max(0.001);
        let rate = (done.saturating_sub(first)) as f64 / secs;
        let eta = if rate > 0.0 && total > done {
            format!("{:.0}s", (total - done) as f64 / rate)
        } else {
            "-".into()
        };
        let pct = if total > 0 {
            done as f64 * 100.0 / total as f64
        } else {
            100.0
        };
        if self.tty {
            let width = 30usize;
            let fill = ((pct / 100.0) * width as f64) as usize;
            let bar: String = "#".repeat(fill.min(width)) + &" ".repeat(width - fill.min(width));
            eprint!(
                "\r[{bar}] {pct:5.1}% {} / {}  {}/s  ETA {eta}   ",
                human(done),
                human(total),
                human(rate as u64)
            );
            let _ = std::io::stderr().flush();
        } else {
            eprintln!(
                "resync: {pct:.1}% {} of {} ({} bytes of {}), {}/s, ETA {eta}",
                human(done),
                human(total),
                done,
                total,
                human(rate as u64)
            );
        }
    }
}

// ---- resync --------------------------------------------------------------------------------

fn cmd_resync(argv: &[String]) -> Result<u8, String> {
    let a = Args::parse(argv, &["--winner", "--resync-rate"], &["--force"])?;
    let rate = a.opt("--resync-rate").map(parse_size).transpose()?;
    if rate == Some(0) {
        return Err("--resync-rate must be more than 0".into());
    }
    let specs = legs_from(&a.pos)?;
    let o = open_and_assemble(&specs, a.flag("--force"), a.opt("--winner"))?;
    let (devs, asm) = devs_by_slot(o);
    let mut cfg = asm.cfg;
    if let Some(r) = rate {
        // Ticks are 100 ms.
        cfg.resync.sectors_per_tick = (r / 10 / u64::from(cfg.sector_size)).max(1);
    }
    let need =
        Mirror::memory_needed(&cfg).map_err(|e| format!("mirror configuration refused: {e:?}"))?;
    let mut mem = vec![0u8; need];
    let init = asm.init();
    let mut mirror = Mirror::new(&cfg, &init, &mut mem)
        .map_err(|e| format!("cannot start the mirror: {e:?}"))?;
    let uuids: Vec<[u8; 16]> = asm.legs.iter().map(|l| l.uuid).collect();
    // Ctrl-C stops cleanly: the copies in flight finish and the checkpoint is recorded.
    let sigset = block_signals();
    let (tx, rx) = channel();
    signal_thread(sigset, tx.clone());
    let mut host = UHost::new(&cfg, devs, &uuids, 4, tx);
    host.quiet = true;
    let ss = u64::from(cfg.sector_size);
    let started = Instant::now();
    let mut prog = Progress::new();
    let tty = prog.tty;
    let mut last = None;
    {
        let mut eng = Engine::new(&mut mirror, host, rx);
        eng.on_tick = Some(Box::new(|st: &dmirror::Status| {
            prog.show(st, ss, false);
            last = Some(*st);
        }));
        let r = eng.run(Mode::Resync);
        eng.on_tick = None;
        eng.host.stop();
        r?;
        if eng.host.stalled {
            return Err("resync stalled: some regions could not be read from any leg".into());
        }
    }
    if let Some(st) = last {
        prog.show(&st, ss, true);
    }
    if tty {
        eprintln!();
    }
    let st = mirror.status();
    let copied = st.counters.resync_sectors * ss;
    let left: u64 = st.leg[..usize::from(st.legs)]
        .iter()
        .filter(|l| l.state.is_active())
        .map(|l| l.regions_out_of_sync)
        .sum();
    if left > 0 {
        return Err(format!(
            "resync stopped after copying {} with {left} regions still to copy; run dmirror resync again to go on",
            human(copied)
        ));
    }
    println!(
        "resynced {} ({} bytes, {} regions of {}) in {:.1}s",
        human(copied),
        copied,
        st.counters.resync_sectors.div_ceil(cfg.region_sectors),
        human(cfg.region_sectors * ss),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

// ---- serve ---------------------------------------------------------------------------------

const DEFAULT_DIR: &str = "./dmirror-data";
const DEFAULT_LEG_BYTES: u64 = 1 << 30;

fn cmd_serve(argv: &[String]) -> Result<u8, String> {
    let a = Args::parse(
        argv,
        &[
            "--listen",
            "--socket",
            "--control",
            "--io-threads",
            "--name",
            "--winner",
            "--read-policy",
            "--resync-rate",
        ],
        &["--force"],
    )?;
    if a.opt("--listen").is_some() && a.opt("--socket").is_some() {
        return Err("give --listen or --socket, not both".into());
    }
    let io_threads: usize = match a.opt("--io-threads") {
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or("--io-threads must be 1..64")?,
        None => 4,
    };
    let policy = a.opt("--read-policy").map(parse_policy).transpose()?;
    let rate = a.opt("--resync-rate").map(parse_size).transpose()?;
    if rate == Some(0) {
        return Err("--resync-rate must be more than 0".into());
    }
    let defaults = a.pos.is_empty();
    let leg_args: Vec<String> = if defaults {
        vec![
            format!("{DEFAULT_DIR}/leg0.img"),
            format!("{DEFAULT_DIR}/leg1.img"),
        ]
    } else {
        a.pos.clone()
    };
    let specs = legs_from(&leg_args)?;
    // Default legs: both absent is a fresh start; one absent is a mistake.
    let mut create_defaults = false;
    if defaults {
        let exist: Vec<bool> = specs.iter().map(|s| s.path.exists()).collect();
        if exist.iter().all(|e| !e) {
            create_defaults = true;
        } else if exist.iter().any(|e| !e) {
            let missing = specs
                .iter()
                .zip(&exist)
                .find(|(_, e)| !**e)
                .map(|(s, _)| s.path.display().to_string());
            return Err(format!(
                "{} is missing but the other default leg exists; give the legs explicitly to run degraded",
                missing.unwrap_or_default()
            ));
        }
    } else {
        for s in &specs {
            if !s.path.exists() {
                return Err(format!("leg {} does not exist", s.path.display()));
            }
        }
    }
    // Bind before writing anything, so a busy port changes nothing on disk.
    let (listener, url) = match a.opt("--socket") {
        Some(p) => {
            let l = control::bind_unix(Path::new(p), "NBD socket")?;
            let abs = std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
            (
                nbd::Listener::Unix(l),
                format!("nbd+unix:///?socket={}", abs.display()),
            )
        }
        None => {
            let addr = a.opt("--listen").unwrap_or("127.0.0.1:10809");
            let l = std::net::TcpListener::bind(addr).map_err(|e| {
                let m = e.to_string();
                let m = m.split(" (os error").next().unwrap_or(&m).to_lowercase();
                format!("cannot listen on {addr}: {m}")
            })?;
            let local = l
                .local_addr()
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            (nbd::Listener::Tcp(l), format!("nbd://{local}"))
        }
    };
    let cleanup_sock = || {
        if let Some(p) = a.opt("--socket") {
            let _ = std::fs::remove_file(p);
        }
    };
    let control_path = PathBuf::from(a.opt("--control").unwrap_or(control::DEFAULT_CONTROL));
    if create_defaults {
        if let Err(e) = create_default_legs(&specs) {
            cleanup_sock();
            return Err(e);
        }
    }
    let mut opened = match open_and_assemble(&specs, a.flag("--force"), a.opt("--winner")) {
        Ok(o) => o,
        Err(e) => {
            cleanup_sock();
            return Err(e);
        }
    };
    let cfg = &mut opened.asm.cfg;
    if let Some(p) = policy {
        if let dmirror::ReadPolicy::Prefer { leg } = p {
            if leg >= cfg.legs {
                cleanup_sock();
                return Err(format!(
                    "--read-policy prefer:{leg}: the mirror has {} legs",
                    cfg.legs
                ));
            }
        }
        cfg.read_policy = p;
    }
    if let Some(r) = rate {
        // Ticks are 100 ms.
        cfg.resync.sectors_per_tick = (r / 10 / u64::from(cfg.sector_size)).max(1);
    }
    if let Some(parent) = control_path.parent() {
        if !parent.as_os_str().is_empty()
            && !parent.exists()
            && control_path.as_os_str() == control::DEFAULT_CONTROL
        {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    let ctl_listener = match control::bind_unix(&control_path, "control socket") {
        Ok(l) => l,
        Err(e) => {
            cleanup_sock();
            return Err(e);
        }
    };
    let r = run_server(
        opened,
        listener,
        ctl_listener,
        &url,
        io_threads,
        a.opt("--name"),
    );
    cleanup_sock();
    let _ = std::fs::remove_file(&control_path);
    r
}

/// `round-robin[:BATCH]`, `load`, `prefer:LEG`, `split[:MIN_SECTORS]`.
fn parse_policy(s: &str) -> Result<dmirror::ReadPolicy, String> {
    use dmirror::ReadPolicy;
    let (name, arg) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    let num = |what: &str| -> Result<Option<u32>, String> {
        arg.map(|a| {
            a.parse::<u32>()
                .ok()
                .filter(|n| *n > 0 || what == "leg")
                .ok_or_else(|| format!("--read-policy {s}: {what} must be a number"))
        })
        .transpose()
    };
    Ok(match name {
        "round-robin" | "roundrobin" => ReadPolicy::RoundRobin { batch: num("batch")?.unwrap_or(8) },
        "load" if arg.is_none() => ReadPolicy::Load,
        "prefer" => {
            let leg = num("leg")?.ok_or("--read-policy prefer needs a leg: prefer:LEG")?;
            ReadPolicy::Prefer { leg: u8::try_from(leg).map_err(|_| format!("--read-policy {s}: no such leg"))? }
        }
        "split" => ReadPolicy::Split { min_sectors: num("min sectors")?.unwrap_or(256) },
        _ => {
            return Err(format!(
                "unknown read policy '{s}' (round-robin[:BATCH], load, prefer:LEG, split[:MIN_SECTORS])"
            ))
        }
    })
}

fn create_default_legs(specs: &[LegSpec]) -> Result<(), String> {
    std::fs::create_dir_all(DEFAULT_DIR)
        .map_err(|e| format!("cannot create {DEFAULT_DIR}: {e}"))?;
    let mut devs = Vec::new();
    for s in specs {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&s.path)
            .map_err(|e| format!("cannot create {}: {e}", s.path.display()))?;
        f.set_len(DEFAULT_LEG_BYTES)
            .map_err(|e| format!("cannot size {}: {e}", s.path.display()))?;
        drop(f);
        devs.push(Dev::open_path(
            &s.path,
            Fault::None,
            true,
            &s.path.display().to_string(),
        )?);
    }
    let o = LabelOpts {
        region: None,
        slots: None,
        size: None,
        force: false,
        use_smallest: false,
        resync: false,
        quiet: true,
    };
    label_devs(&devs, "dmirror", &o)?;
    eprintln!(
        "dmirror: created and labelled {} legs of {} in {DEFAULT_DIR}",
        devs.len(),
        human(DEFAULT_LEG_BYTES)
    );
    Ok(())
}

fn run_server(
    opened: Opened,
    listener: nbd::Listener,
    ctl: std::os::unix::net::UnixListener,
    url: &str,
    io_threads: usize,
    export_name: Option<&str>,
) -> Result<u8, String> {
    let stale: Vec<String> = opened
        .asm
        .stale
        .iter()
        .map(|i| opened.devs[*i].name.clone())
        .collect();
    let (devs, asm) = devs_by_slot(opened);
    let cfg = asm.cfg;
    let need =
        Mirror::memory_needed(&cfg).map_err(|e| format!("mirror configuration refused: {e:?}"))?;
    let mut mem = vec![0u8; need];
    let init = asm.init();
    let mut mirror = Mirror::new(&cfg, &init, &mut mem)
        .map_err(|e| format!("cannot start the mirror: {e:?}"))?;
    let sigset = block_signals();
    let (tx, rx) = channel();
    let uuids: Vec<[u8; 16]> = asm.legs.iter().map(|l| l.uuid).collect();
    let names: Vec<String> = devs
        .iter()
        .map(|d| {
            d.as_ref()
                .map(|d| d.name.clone())
                .unwrap_or_else(|| "-".into())
        })
        .collect();
    let host = UHost::new(&cfg, devs, &uuids, io_threads, tx.clone());
    signal_thread(sigset, tx.clone());
    let name = export_name.map(str::to_string).unwrap_or_else(|| {
        if asm.name_str.is_empty() {
            "dmirror".into()
        } else {
            asm.name_str.clone()
        }
    });
    let export = nbd::Export {
        name: name.clone(),
        size: cfg.data_sectors * u64::from(cfg.sector_size),
        sector_size: cfg.sector_size,
    };
    {
        let tx = tx.clone();
        let export = export.clone();
        std::thread::spawn(move || nbd::accept_loop(listener, export, tx));
    }
    {
        let ctx = control::Ctx {
            mirror_uuid: asm.mirror_uuid,
            name: name.clone(),
            sector_size: cfg.sector_size,
            engine: tx.clone(),
        };
        std::thread::spawn(move || control::serve(ctl, ctx));
    }
    for s in &stale {
        eprintln!(
            "dmirror: {s} is stale; it is resynced from the other legs before it serves reads"
        );
    }
    println!(
        "dmirror: serving mirror '{name}' ({}) from {} on {url}",
        human(export.size),
        names.join(" + ")
    );
    println!("connect with: qemu-io -f raw {url}");
    let _ = std::io::stdout().flush();
    let mut eng = Engine::new(&mut mirror, host, rx);
    let r = eng.run(Mode::Serve);
    eng.host.stop();
    r?;
    eprintln!("dmirror: clean shutdown complete");
    Ok(0)
}

// ---- control clients -----------------------------------------------------------------------

fn cmd_control(cmd: &str, argv: &[String]) -> Result<u8, String> {
    let a = Args::parse(argv, &["--control"], &["--json", "--force"])?;
    let path = PathBuf::from(a.opt("--control").unwrap_or(control::DEFAULT_CONTROL));
    let line = match cmd {
        "status" => {
            if !a.pos.is_empty() {
                return Err("status takes no arguments".into());
            }
            "status".to_string()
        }
        _ => {
            let [leg] = a.pos.as_slice() else {
                return Err(format!("{cmd} needs exactly one LEG"));
            };
            if leg.contains(char::is_whitespace) {
                return Err(format!("leg '{leg}' contains white space"));
            }
            let leg = if cmd == "add" {
                // The server opens the path: make it absolute.
                match LegSpec::parse(leg) {
                    Ok(s) if s.fault == Fault::None => std::fs::canonicalize(&s.path)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| leg.clone()),
                    _ => leg.clone(),
                }
            } else {
                leg.clone()
            };
            let force = if a.flag("--force") && cmd == "add" {
                " --force"
            } else {
                ""
            };
            format!("{cmd}{force} {leg}")
        }
    };
    let v = control::call(&path, &line)?;
    if v["ok"].as_bool() != Some(true) {
        return Err(v["error"]
            .as_str()
            .unwrap_or("the server refused")
            .to_string());
    }
    if cmd == "status" {
        let s = &v["status"];
        if a.flag("--json") {
            println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        } else {
            print_status(s);
        }
    } else if a.flag("--json") {
        println!("{v}");
    } else if cmd == "add" {
        println!(
            "added as leg {}; {} resync running",
            v["leg"],
            if v["incremental"].as_bool() == Some(true) {
                "incremental"
            } else {
                "full"
            }
        );
    } else {
        println!("ok");
    }
    Ok(0)
}

fn print_status(s: &Value) {
    let ss = s["sector_size"].as_u64().unwrap_or(512);
    let rs = s["region_sectors"].as_u64().unwrap_or(0) * ss;
    println!(
        "mirror '{}' {}: {}, generation {}, authoritative leg {}",
        s["name"].as_str().unwrap_or(""),
        s["mirror_uuid"].as_str().unwrap_or(""),
        human(s["data_sectors"].as_u64().unwrap_or(0) * ss),
        s["generation"],
        s["authoritative"]
    );
    println!(
        "regions: {} of {}, {} in sync, {} dirty",
        s["regions"],
        human(rs),
        s["regions_in_sync"],
        s["dirty_regions"]
    );
    for l in s["legs"].as_array().cloned().unwrap_or_default() {
        let mut extra = String::new();
        let total = l["resync_total_sectors"].as_u64().unwrap_or(0);
        let state = l["state"].as_str().unwrap_or("");
        if state == "rebuilding" {
            let done = l["resync_done_sectors"].as_u64().unwrap_or(0);
            let pct = if total > 0 {
                done as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            extra = format!(
                "  resync {pct:.1}% ({} of {})",
                human(done * ss),
                human(total * ss)
            );
        }
        let oos = l["regions_out_of_sync"].as_u64().unwrap_or(0);
        if oos > 0 && matches!(state, "in-sync" | "rebuilding" | "missing") {
            extra.push_str(&format!("  {oos} regions out of sync"));
        }
        println!(
            "leg {}  {:<10}  {}  reads {} writes {} errors {}{extra}",
            l["index"],
            l["state"].as_str().unwrap_or(""),
            l["device"]
                .as_str()
                .filter(|d| !d.is_empty())
                .unwrap_or("-"),
            l["reads"],
            l["writes"],
            l["errors"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(parse_size("12q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn args() {
        assert_eq!(parse_policy("load").unwrap(), dmirror::ReadPolicy::Load);
        assert_eq!(
            parse_policy("prefer:1").unwrap(),
            dmirror::ReadPolicy::Prefer { leg: 1 }
        );
        assert_eq!(
            parse_policy("round-robin:4").unwrap(),
            dmirror::ReadPolicy::RoundRobin { batch: 4 }
        );
        assert_eq!(
            parse_policy("split").unwrap(),
            dmirror::ReadPolicy::Split { min_sectors: 256 }
        );
        assert!(parse_policy("prefer").is_err());
        assert!(parse_policy("round-robin:0").is_err());
        assert!(parse_policy("fastest").is_err());
        let v: Vec<String> = ["--name", "x", "a", "--force", "--region-size=1M", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse(&v, &["--name", "--region-size"], &["--force"]).unwrap();
        assert_eq!(a.opt("--name"), Some("x"));
        assert_eq!(a.opt("--region-size"), Some("1M"));
        assert!(a.flag("--force"));
        assert_eq!(a.pos, vec!["a", "b"]);
        assert!(Args::parse(&["--bogus".to_string()], &[], &[]).is_err());
        assert!(Args::parse(&["--name".to_string()], &["--name"], &[]).is_err());
    }

    #[test]
    fn bitmap_range_merge() {
        let b = [0b0000_0111u8, 0b1000_0000];
        assert_eq!(bitmap_ranges(&b, 16), vec![(0, 3), (15, 16)]);
        assert_eq!(ranges_str(&bitmap_ranges(&b, 16)), "0-2,15");
    }
}
