//! `dmirror-sim --seeds N [--first-seed F] [--crash]` runs seeds F..F+N and ends with
//! `N passed, M failed`; `--seed S [--crash]` replays one seed with a trace of every event.
use dmirror_sim::{run, Backend, CoreMutant, Mutant, Opts, RefBug};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: dmirror-sim --seeds N [--first-seed F] [--crash] [--mutant early|stale|lose-flush]\n                   [--reference | --ref-bug early|order|flush]   (drive the simulator's own reference core)\n                   [--core-mutant early|order|skip-journal|clear-early|log-no-flush]   (needs --features core-mutants)\n                   [--calm]   (no faults, no leg control operations)\n                   [--disk-log]   (dm-mirror's disk log: metadata on a separate log device)\n                   [--no-meta-check]   (skip the metadata-buffer and blank-superblock checks)\n       dmirror-sim --seed S [--crash] [--mutant ...]   (replay one seed with a full trace)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds: Option<u64> = None;
    let mut first = 0u64;
    let mut one: Option<u64> = None;
    let mut opts = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--seeds" => match val(i) {
                Some(v) => seeds = Some(v),
                None => return usage(),
            },
            "--first-seed" => match val(i) {
                Some(v) => first = v,
                None => return usage(),
            },
            "--seed" => match val(i) {
                Some(v) => one = Some(v),
                None => return usage(),
            },
            "--reference" => {
                opts.backend = Backend::Reference(None);
                i += 1;
                continue;
            }
            "--ref-bug" => {
                opts.backend = Backend::Reference(match args.get(i + 1).map(String::as_str) {
                    Some("early") => Some(RefBug::EarlyCompletion),
                    Some("order") => Some(RefBug::NoWriteOrdering),
                    Some("flush") => Some(RefBug::FlushOneLeg),
                    _ => return usage(),
                });
            }
            "--core-mutant" => {
                opts.core_mutant = match args.get(i + 1).map(String::as_str) {
                    Some("early") => Some(CoreMutant::CompleteEarly),
                    Some("order") => Some(CoreMutant::NoWriteOrdering),
                    Some("skip-journal") => Some(CoreMutant::SkipJournal),
                    Some("clear-early") => Some(CoreMutant::ClearBeforeFlush),
                    Some("log-no-flush") => Some(CoreMutant::LogNoFlush),
                    _ => return usage(),
                };
            }
            "--calm" => {
                opts.calm = true;
                i += 1;
                continue;
            }
            "--no-meta-check" => {
                opts.no_meta_check = true;
                i += 1;
                continue;
            }
            "--disk-log" => {
                opts.disk_log = true;
                i += 1;
                continue;
            }
            "--crash" => {
                opts.crash = true;
                i += 1;
                continue;
            }
            "--mutant" => {
                opts.mutant = match args.get(i + 1).map(String::as_str) {
                    Some("early") => Some(Mutant::EarlyCompletion),
                    Some("stale") => Some(Mutant::StaleLegWrite),
                    Some("lose-flush") => Some(Mutant::LoseFlushedWrite),
                    _ => return usage(),
                };
            }
            _ => return usage(),
        }
        i += 2;
    }
    if let Some(s) = one {
        opts.trace = true;
        let out = run(s, &opts);
        println!("seed {s}: {}", out.summary);
        println!("stats: {:?}", out.stats);
        return match out.result {
            Ok(()) => {
                println!("seed {s}: passed");
                println!("1 passed, 0 failed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("seed {s}: FAILED: {e}");
                println!("0 passed, 1 failed");
                ExitCode::FAILURE
            }
        };
    }
    let Some(n) = seeds else { return usage() };
    let (mut passed, mut failed) = (0u64, 0u64);
    for s in first..first.saturating_add(n) {
        let out = run(s, &opts);
        match out.result {
            Ok(()) => passed += 1,
            Err(e) => {
                failed += 1;
                println!("seed {s} FAILED: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
