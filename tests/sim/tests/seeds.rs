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
        let mode = if opts.crash { " --crash" } else { "" };
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
    let bad = failures(seeds.clone(), mutated);
    assert!(
        !bad.is_empty(),
        "planted bug {:?}/{:?} was never caught in seeds {seeds:?}",
        mutated.mutant,
        mutated.backend
    );
    let caught: Vec<u64> = bad
        .iter()
        .map(|(s, _)| *s)
        .filter(|&s| run(s, clean).result.is_ok())
        .collect();
    assert!(
        !caught.is_empty(),
        "every seed that failed with the planted bug also fails without it: {:?}",
        bad.iter().take(3).collect::<Vec<_>>()
    );
    eprintln!(
        "planted {:?}/{:?}: caught by {} of {} seeds (e.g. {:?})",
        mutated.mutant,
        mutated.backend,
        bad.len(),
        seeds.end - seeds.start,
        &bad[0]
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
