//! The simulator's test suite: thousands of seeds against the dmirror core (normal and crash
//! mode), the same against the simulator's own reference core (no false alarms), and mutation
//! checks: bugs planted in the host, in the legs and in the reference core must all be caught.
use dmirror_sim::{run, Backend, Mutant, Opts, RefBug};

/// Runs `seeds` and returns the failures (seed, message).
fn failures(seeds: std::ops::Range<u64>, opts: &Opts) -> Vec<(u64, String)> {
    seeds
        .filter_map(|s| {
            let out = run(s, opts);
            out.result.err().map(|e| (s, e))
        })
        .collect()
}

fn assert_all_pass(seeds: std::ops::Range<u64>, opts: &Opts) {
    let n = seeds.end - seeds.start;
    let f = failures(seeds, opts);
    if !f.is_empty() {
        let mode = format!(
            "{}{}",
            if opts.crash { " --crash" } else { "" },
            if opts.calm { " --calm" } else { "" }
        );
        let mut msg = format!(
            "{} of {n} seeds failed ({:?}{mode}); replay with `dmirror-sim --seed S{mode}`:\n",
            f.len(),
            opts.backend
        );
        for (s, e) in f.iter().take(15) {
            msg.push_str(&format!("  seed {s}: {e}\n"));
        }
        panic!("{msg}");
    }
}

/// A planted bug is caught: some seed passes without it and fails with it.
fn assert_caught(seeds: std::ops::Range<u64>, clean: &Opts, mutated: &Opts) {
    let what = format!(
        "{:?}/{:?}/{:?}",
        mutated.mutant, mutated.core_mutant, mutated.backend
    );
    let bad = failures(seeds.clone(), mutated);
    assert!(
        !bad.is_empty(),
        "planted bug {what} was never caught in seeds {seeds:?}"
    );
    let caught: Vec<&(u64, String)> = bad
        .iter()
        .filter(|(s, _)| run(*s, clean).result.is_ok())
        .collect();
    assert!(
        !caught.is_empty(),
        "planted bug {what}: every seed that failed with it also fails without it: {:?}",
        bad.iter().take(3).collect::<Vec<_>>()
    );
    eprintln!(
        "planted {what}: {} of {} seeds fail, {} of them pass without it (e.g. seed {}: {})",
        bad.len(),
        seeds.end - seeds.start,
        caught.len(),
        caught[0].0,
        caught[0].1
    );
}

fn opts(backend: Backend, crash: bool, mutant: Option<Mutant>) -> Opts {
    Opts {
        crash,
        backend,
        mutant,
        ..Opts::default()
    }
}

const REF: Backend = Backend::Reference(None);

// ----- the dmirror core ------------------------------------------------------------------------

#[test]
fn dmirror_2000_seeds() {
    assert_all_pass(0..2000, &opts(Backend::Dmirror, false, None));
}

#[test]
fn dmirror_1000_crash_seeds() {
    assert_all_pass(0..1000, &opts(Backend::Dmirror, true, None));
}

/// Crashes without faults or leg changes: isolates the journal and the data path from the
/// leg-state machinery.
#[test]
fn dmirror_1000_calm_crash_seeds() {
    assert_all_pass(
        0..1000,
        &Opts {
            calm: true,
            ..opts(Backend::Dmirror, true, None)
        },
    );
}

#[test]
fn dmirror_catches_early_parent_completion() {
    assert_caught(
        0..40,
        &opts(Backend::Dmirror, false, None),
        &opts(Backend::Dmirror, false, Some(Mutant::EarlyCompletion)),
    );
}

#[test]
fn dmirror_catches_a_leg_that_drops_a_write() {
    assert_caught(
        0..80,
        &opts(Backend::Dmirror, false, None),
        &opts(Backend::Dmirror, false, Some(Mutant::StaleLegWrite)),
    );
}

#[test]
fn dmirror_catches_a_leg_that_loses_flushed_writes() {
    assert_caught(
        0..120,
        &opts(Backend::Dmirror, true, None),
        &opts(Backend::Dmirror, true, Some(Mutant::LoseFlushedWrite)),
    );
}

// ----- the dmirror core with a disk log (dm-mirror's `disk`: metadata on a separate device) ------

fn disk_log(crash: bool) -> Opts {
    Opts {
        disk_log: true,
        ..opts(Backend::Dmirror, crash, None)
    }
}

#[test]
fn dmirror_disk_log_1000_seeds() {
    assert_all_pass(0..1000, &disk_log(false));
}

/// Crashes, torn and lost writes on the legs and on the log device, reassembly from the log
/// device (`dmirror::logdev::assemble_log`), the log journal check, log-device failures.
#[test]
fn dmirror_disk_log_1000_crash_seeds() {
    assert_all_pass(0..1000, &disk_log(true));
}

#[test]
fn dmirror_disk_log_500_calm_crash_seeds() {
    assert_all_pass(
        0..500,
        &Opts {
            calm: true,
            ..disk_log(true)
        },
    );
}

#[test]
fn dmirror_disk_log_catches_a_leg_that_loses_flushed_writes() {
    assert_caught(
        0..120,
        &disk_log(true),
        &Opts {
            mutant: Some(Mutant::LoseFlushedWrite),
            ..disk_log(true)
        },
    );
}

// ----- the simulator itself, against its reference core ------------------------------------------

#[test]
fn reference_core_passes_500_seeds() {
    assert_all_pass(0..500, &opts(REF, false, None));
}

#[test]
fn reference_core_passes_300_crash_seeds() {
    assert_all_pass(0..300, &opts(REF, true, None));
}

#[test]
fn reference_catches_host_mutants() {
    assert_caught(
        0..40,
        &opts(REF, false, None),
        &opts(REF, false, Some(Mutant::EarlyCompletion)),
    );
    assert_caught(
        0..80,
        &opts(REF, false, None),
        &opts(REF, false, Some(Mutant::StaleLegWrite)),
    );
    assert_caught(
        0..120,
        &opts(REF, true, None),
        &opts(REF, true, Some(Mutant::LoseFlushedWrite)),
    );
}

#[test]
fn reference_catches_core_bugs() {
    for bug in [
        RefBug::EarlyCompletion,
        RefBug::NoWriteOrdering,
        RefBug::FlushOneLeg,
    ] {
        assert_caught(
            0..80,
            &opts(REF, false, None),
            &opts(Backend::Reference(Some(bug)), false, None),
        );
    }
}

#[test]
fn replay_is_deterministic() {
    for s in [1u64, 77, 1234] {
        for crash in [false, true] {
            let o = opts(Backend::Dmirror, crash, None);
            let (a, b) = (run(s, &o), run(s, &o));
            assert_eq!(a.result, b.result, "seed {s} crash={crash}");
            assert_eq!(
                format!("{:?}", a.stats),
                format!("{:?}", b.stats),
                "seed {s} crash={crash}"
            );
        }
    }
}

// ----- bugs planted in the dmirror core itself (`cargo test --features core-mutants`) -----------

#[cfg(feature = "core-mutants")]
mod core_mutants {
    use super::*;
    use dmirror_sim::CoreMutant;

    fn planted(crash: bool, m: CoreMutant) -> Opts {
        Opts {
            core_mutant: Some(m),
            ..opts(Backend::Dmirror, crash, None)
        }
    }

    #[test]
    fn catches_a_write_group_completed_early() {
        assert_caught(
            0..60,
            &opts(Backend::Dmirror, false, None),
            &planted(false, CoreMutant::CompleteEarly),
        );
    }

    #[test]
    fn catches_unordered_overlapping_writes() {
        assert_caught(
            0..150,
            &opts(Backend::Dmirror, false, None),
            &planted(false, CoreMutant::NoWriteOrdering),
        );
    }

    #[test]
    fn catches_a_skipped_journal() {
        assert_caught(
            0..400,
            &opts(Backend::Dmirror, true, None),
            &planted(true, CoreMutant::SkipJournal),
        );
    }

    fn planted_disk_log(m: CoreMutant) -> Opts {
        Opts {
            disk_log: true,
            ..planted(true, m)
        }
    }

    fn disk_log_crash() -> Opts {
        Opts {
            disk_log: true,
            ..opts(Backend::Dmirror, true, None)
        }
    }

    /// Disk log: data sent to the legs before the region's mark is durable on the log device.
    #[test]
    fn disk_log_catches_a_skipped_journal() {
        assert_caught(
            0..300,
            &disk_log_crash(),
            &planted_disk_log(CoreMutant::SkipJournal),
        );
    }

    /// Disk log: a log round counted durable before the log device's flush.
    #[test]
    fn disk_log_catches_a_mark_not_flushed_on_the_log_device() {
        assert_caught(
            0..300,
            &disk_log_crash(),
            &planted_disk_log(CoreMutant::LogNoFlush),
        );
    }

    /// Disk log: bits cleared before the legs' data flush (the log device's own flush does not
    /// make the legs' data durable).
    #[test]
    fn disk_log_catches_bits_cleared_before_the_data_flush() {
        assert_caught(
            0..300,
            &disk_log_crash(),
            &planted_disk_log(CoreMutant::ClearBeforeFlush),
        );
    }

    #[test]
    fn catches_bits_cleared_before_the_data_flush() {
        assert_caught(
            0..400,
            &opts(Backend::Dmirror, true, None),
            &planted(true, CoreMutant::ClearBeforeFlush),
        );
    }
}
