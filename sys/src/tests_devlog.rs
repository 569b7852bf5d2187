//! Unit tests of the disk log (`LogKind::Device`): activation from a blank, valid or corrupt log
//! device (`logdev.rs`), log-device rounds and their ordering against data (`devlog.rs`), the
//! on-disk marking of a log device (`format.rs`), and the log-failure policy.
use crate::format::{self, Superblock, LOG_DEVICE_INDEX, SB_BYTES};
use crate::logdev::{assemble_log, LogAssembly, LogError, LogRead, LogSync, LogTable};
use crate::tests::{cfg, read, write, TestHost};
use crate::*;
use std::vec;
use std::vec::Vec;

const DATA: u64 = 256;
const LOG: usize = 2;
const UUID: [u8; 16] = *b"disk-log-mirror1";

fn host() -> TestHost {
    // Two legs of exactly the data size (no metadata on them) and a log device (index 2).
    let mut h = TestHost::new(3, DATA, 512);
    h.log_dev = true;
    h
}

fn log_slots(h: &TestHost) -> (Vec<u8>, Vec<u8>) {
    let l = &h.legs[LOG];
    (l[..SB_BYTES].to_vec(), l[SB_BYTES..2 * SB_BYTES].to_vec())
}

fn activate(h: &TestHost, sync: LogSync) -> Result<LogAssembly, LogError> {
    let (s0, s1) = log_slots(h);
    let legs = [DATA, DATA];
    assemble_log(
        &LogRead {
            sectors: (h.legs[LOG].len() / 512) as u64,
            sector_size: 512,
            slot0: &s0,
            slot1: &s1,
            tail: None,
        },
        &LogTable {
            leg_sectors: &legs,
            data_sectors: DATA,
            region_sectors: 16,
            sector_size: 512,
            sync,
            uuid: UUID,
        },
    )
}

fn log_bitmap(h: &TestHost, sector: u64) -> Vec<u8> {
    let o = sector as usize * 512;
    h.legs[LOG][o..o + 512].to_vec()
}

fn device_cfg() -> Config {
    let mut c = cfg(2, DATA, LogKind::Device);
    c.region_sectors = 16;
    c
}

/// Build a mirror from an activation answer (bitmaps read from the host's log device).
macro_rules! from_log {
    ($m:ident, $mem:ident, $h:expr, $a:expr) => {
        let a = $a;
        let dirty = a.dirty_read().map(|b| log_bitmap(&$h, b.sector));
        let tracking: Vec<Option<Vec<u8>>> = (0..2u8)
            .map(|k| a.tracking_read(k).map(|b| log_bitmap(&$h, b.sector)))
            .collect();
        let mut t: [Option<&[u8]>; MAX_LEGS] = [None; MAX_LEGS];
        for (k, x) in tracking.iter().enumerate() {
            t[k] = x.as_deref();
        }
        let init = a.init(dirty.as_deref(), t);
        let c = device_cfg();
        let mut $mem = vec![0u8; Mirror::memory_needed(&c).unwrap()];
        #[allow(unused_mut)]
        let mut $m = Mirror::new(&c, &init, &mut $mem).unwrap();
    };
}

fn log_superblock(h: &TestHost) -> Superblock {
    let (s0, s1) = log_slots(h);
    format::decode_newest_log(&s0, &s1).unwrap()
}

#[test]
fn log_layout_is_pinned_at_the_start_of_the_device() {
    let l = format::log_layout(512, 1024, 1 << 30).unwrap();
    // 2^30 sectors / 1024 = 2^20 regions = 128 KiB = 256 sectors per bitmap.
    assert_eq!(l.slots, [0, 8]);
    assert_eq!(l.bitmap_start, 16);
    assert_eq!(l.bitmap_sectors, 256);
    assert_eq!(l.tracking_start, 16 + 256);
    assert_eq!(l.tracking(31), Some(16 + 256 * 32));
    assert_eq!(
        format::log_device_sectors(512, 1024, 1 << 30, 2),
        Ok(16 + 3 * 256)
    );
    assert_eq!(
        format::log_device_sectors(512, 1024, 1 << 30, 32),
        Ok(16 + 33 * 256)
    );
    assert!(format::log_device_sectors(512, 1024, 1 << 30, 0).is_err());
    // 4 KiB sectors: one sector per slot.
    let l = format::log_layout(4096, 8, 80).unwrap();
    assert_eq!((l.slots, l.bitmap_start, l.bitmap_sectors), ([0, 1], 2, 1));
    assert_eq!(format::log_device_sectors(4096, 8, 80, 3), Ok(2 + 4));
}

#[test]
fn blank_log_is_a_new_mirror_and_marks_go_to_the_log_before_data() {
    let mut h = host();
    let a = activate(&h, LogSync::Default).unwrap();
    assert!(a.fresh);
    assert_eq!(a.legs[0].state, LegState::InSync);
    assert_eq!(
        a.legs[1].state,
        LegState::Rebuilding,
        "full resync by default"
    );
    assert!(a.dirty_read().is_none());
    let a = activate(&h, LogSync::Skip).unwrap();
    assert_eq!(a.legs[1].state, LegState::InSync, "nosync");
    from_log!(m, mem, h, a);
    m.start(&mut h);
    h.run(&mut m);
    // The first round labelled the log device; the legs got no metadata at all.
    let sb = log_superblock(&h);
    assert!(sb.is_log_device() && sb.leg_index == LOG_DEVICE_INDEX);
    assert_eq!((sb.nlegs, sb.data_sectors, sb.clean), (2, DATA, false));
    assert!(h.issued.iter().all(|io| io.leg == LOG_DEV));
    let before = h.issued.len();
    write(&mut h, &mut m, 1, 0, 4, 0xA1);
    write(&mut h, &mut m, 2, 100, 4, 0xA2);
    // Only log I/O until the marks are durable there (write + flush).
    assert!(h.issued[before..].iter().all(|io| io.leg == LOG_DEV));
    h.run(&mut m);
    assert_eq!(h.completed(1), Some(Ok(())));
    assert_eq!(h.completed(2), Some(Ok(())));
    let new = &h.issued[before..];
    let first_data = new.iter().position(|io| io.leg != LOG_DEV).unwrap();
    assert!(new[..first_data]
        .iter()
        .any(|io| io.leg == LOG_DEV && io.op == LegOp::Flush));
    // Each log round is one flush of the log device, whatever the number of legs (two rounds
    // here: the second write marked its region while the first round was in flight); the legs
    // get data only, no metadata and no metadata flush.
    assert_eq!(
        new.iter()
            .filter(|io| io.leg == LOG_DEV && io.op == LegOp::Flush)
            .count(),
        2
    );
    assert!(new
        .iter()
        .filter(|io| io.leg != LOG_DEV)
        .all(|io| matches!(io.buf, BufRef::Parent { .. })));
    // The marks are on the log device: regions 0 and 6.
    let w = log_bitmap(&h, 16);
    assert_eq!(w[0], 0b0100_0001);
    for leg in 0..2 {
        assert!(h.legs[leg][..4 * 512].iter().all(|b| *b == 0xA1));
    }
}

#[test]
fn crash_then_reload_resyncs_the_dirty_regions_and_clean_shutdown_nothing() {
    let mut h = host();
    {
        from_log!(m, mem, h, activate(&h, LogSync::Skip).unwrap());
        m.start(&mut h);
        write(&mut h, &mut m, 1, 40, 4, 0xB1);
        h.run(&mut m);
        assert_eq!(h.completed(1), Some(Ok(())));
        // Crash: the mirror is dropped without a shutdown.
    }
    let a = activate(&h, LogSync::Default).unwrap();
    assert!(!a.fresh && !a.clean);
    assert_eq!(a.mirror_uuid, UUID);
    assert_eq!(
        (a.legs[0].state, a.legs[1].state),
        (LegState::InSync, LegState::InSync)
    );
    {
        from_log!(m, mem, h, a);
        // Region 2 (sector 40) is dirty: the non-authoritative leg resyncs it.
        assert_eq!(m.status().leg[1].regions_out_of_sync, 1);
        m.start(&mut h);
        h.run(&mut m);
        assert_eq!(m.status().leg[1].regions_out_of_sync, 0);
        m.shutdown(&mut h);
        h.run(&mut m);
        assert!(h.events.contains(&Event::ShutdownDone));
    }
    let a = activate(&h, LogSync::Default).unwrap();
    assert!(a.clean);
    from_log!(m, mem, h, a);
    assert_eq!(m.status().regions_in_sync, m.status().regions);
    // `sync` forces a full resync of the other leg even with a clean, valid log.
    let a = activate(&h, LogSync::Force).unwrap();
    assert_eq!(a.legs[1].state, LegState::Rebuilding);
    assert!(a.legs[1].rebuild.full);
    assert_eq!(a.legs[0].state, LegState::InSync);
}

#[test]
fn leg_failure_is_on_the_log_before_the_write_completes() {
    let mut h = host();
    from_log!(m, mem, h, activate(&h, LogSync::Skip).unwrap());
    m.start(&mut h);
    h.run(&mut m);
    h.fail[1] = Some(IoError::Io);
    write(&mut h, &mut m, 1, 0, 4, 1);
    // Deliver until leg 1's data write has failed, then check the parent waits for the log.
    let mut guard = 0;
    while h.completed(1).is_none() {
        assert!(h.step(&mut m, false));
        if h.completed(1).is_some() {
            // The failure was written to the log (and flushed) before the completion.
            let now = log_superblock(&h);
            assert_eq!(now.legs[1].state, format::DiskLegState::Failed);
        }
        guard += 1;
        assert!(guard < 1000);
    }
    assert_eq!(h.completed(1), Some(Ok(())));
    h.run(&mut m);
    // Reload: the failed leg stays failed, so it resyncs in full.

    let a = activate(&h, LogSync::Default).unwrap();
    assert_eq!(a.legs[1].state, LegState::Rebuilding);
    assert!(a.legs[1].rebuild.full);
}

#[test]
fn log_failure_keeps_writes_while_every_leg_takes_them_then_fails_them() {
    let mut h = host();
    from_log!(m, mem, h, activate(&h, LogSync::Skip).unwrap());
    m.start(&mut h);
    h.run(&mut m);
    assert!(!m.log_failed());
    h.fail[LOG] = Some(IoError::Io);
    write(&mut h, &mut m, 1, 0, 4, 1);
    h.run(&mut m);
    assert!(m.log_failed());
    assert!(h.events.contains(&Event::LogFailed { error: IoError::Io }));
    assert_eq!(h.completed(1), Some(Ok(())), "both legs wrote it");
    write(&mut h, &mut m, 2, 64, 4, 2);
    h.run(&mut m);
    assert_eq!(h.completed(2), Some(Ok(())));
    // Now a leg fails: that change cannot be recorded, so the write it affects fails, and so
    // does every later write (they would be acknowledged on fewer legs than the log claims).
    h.fail[1] = Some(IoError::Io);
    write(&mut h, &mut m, 3, 128, 4, 3);
    h.run(&mut m);
    assert_eq!(h.completed(3), Some(Err(IoError::Io)));
    h.fail[1] = None;
    write(&mut h, &mut m, 4, 200, 4, 4);
    h.run(&mut m);
    assert_eq!(h.completed(4), Some(Err(IoError::Io)));
    // Reads go on.
    read(&mut h, &mut m, 5, 0, 4);
    h.run(&mut m);
    assert_eq!(h.completed(5), Some(Ok(())));
    assert!(h.bufs[&5].iter().all(|b| *b == 1));
}

#[test]
fn corrupt_foreign_and_small_logs_are_refused() {
    let mut h = host();
    {
        from_log!(m, mem, h, activate(&h, LogSync::Skip).unwrap());
        m.start(&mut h);
        h.run(&mut m);
    }
    let good = h.legs[LOG].clone();
    // Both slots with the magic but a bad CRC.
    let sb = log_superblock(&h);
    for slot in 0..2 {
        let o = slot * SB_BYTES;
        if h.legs[LOG][o..o + 8] == format::MAGIC {
            h.legs[LOG][o + 200] ^= 1;
        } else {
            h.legs[LOG][o..o + 8].copy_from_slice(&format::MAGIC);
            h.legs[LOG][o + 8] = 1;
        }
    }
    assert!(matches!(
        activate(&h, LogSync::Default),
        Err(LogError::Unreadable(format::FormatError::BadChecksum))
    ));
    // A leg's superblock (a self-describing dmirror leg) is not a log device.
    h.legs[LOG] = good.clone();
    let mut leg_sb = sb;
    leg_sb.leg_index = 0;
    leg_sb.seq = 2;
    // A leg superblock needs a leg-sized layout: record a leg big enough.
    leg_sb.legs[0].sectors = 1 << 20;
    leg_sb.legs[1].sectors = 1 << 20;
    let leg_sb = leg_sb.for_leg(0).unwrap();
    let mut buf = vec![0u8; SB_BYTES];
    leg_sb.encode(&mut buf).unwrap();
    h.legs[LOG][..SB_BYTES].copy_from_slice(&buf);
    h.legs[LOG][SB_BYTES..2 * SB_BYTES].fill(0);
    assert_eq!(
        activate(&h, LogSync::Default).unwrap_err(),
        LogError::Unreadable(format::FormatError::NotLogDevice)
    );
    // And a log device's superblock is refused as a leg.
    h.legs[LOG] = good.clone();
    let (s0, s1) = log_slots(&h);
    assert_eq!(
        format::decode_newest(&s0, &s1).unwrap_err(),
        format::FormatError::LogDevice
    );
    // Another mirror's geometry.
    let (s0, s1) = log_slots(&h);
    let other = assemble_log(
        &LogRead {
            sectors: DATA,
            sector_size: 512,
            slot0: &s0,
            slot1: &s1,
            tail: None,
        },
        &LogTable {
            leg_sectors: &[DATA, DATA, DATA],
            data_sectors: DATA,
            region_sectors: 16,
            sector_size: 512,
            sync: LogSync::Default,
            uuid: UUID,
        },
    );
    assert!(matches!(other, Err(LogError::Foreign { what: "legs", .. })));
    let resized = assemble_log(
        &LogRead {
            sectors: DATA,
            sector_size: 512,
            slot0: &s0,
            slot1: &s1,
            tail: None,
        },
        &LogTable {
            leg_sectors: &[DATA, DATA + 8],
            data_sectors: DATA,
            region_sectors: 16,
            sector_size: 512,
            sync: LogSync::Default,
            uuid: UUID,
        },
    );
    assert_eq!(
        resized.unwrap_err(),
        LogError::WrongSize {
            leg: 1,
            recorded: DATA,
            actual: DATA + 8
        }
    );
    // Too small a log device (blank or not).
    let small = assemble_log(
        &LogRead {
            sectors: 18,
            sector_size: 512,
            slot0: &s0,
            slot1: &s1,
            tail: None,
        },
        &LogTable {
            leg_sectors: &[DATA, DATA],
            data_sectors: DATA,
            region_sectors: 16,
            sector_size: 512,
            sync: LogSync::Default,
            uuid: UUID,
        },
    );
    assert_eq!(
        small.unwrap_err(),
        LogError::TooSmall {
            needed: 19,
            actual: 18
        }
    );
    // Unlabelled (no dmirror magic, e.g. what lvm2 left): a new mirror.
    h.legs[LOG].fill(0xFF);
    assert!(activate(&h, LogSync::Default).unwrap().fresh);
    // But a self-describing dmirror leg given as the log device (its start is data, its
    // superblocks at its end) is refused, not overwritten.
    let legs = [DATA, DATA];
    let table = LogTable {
        leg_sectors: &legs,
        data_sectors: DATA,
        region_sectors: 16,
        sector_size: 512,
        sync: LogSync::Default,
        uuid: UUID,
    };
    let data = vec![0x5Au8; SB_BYTES];
    let read = |tail: Option<(&[u8], &[u8])>| {
        assemble_log(
            &LogRead {
                sectors: 1 << 20,
                sector_size: 512,
                slot0: &data,
                slot1: &data,
                tail,
            },
            &table,
        )
    };
    assert!(read(None).unwrap().fresh);
    let blank = vec![0u8; SB_BYTES];
    assert!(read(Some((&blank, &blank))).unwrap().fresh);
    assert_eq!(read(Some((&buf, &blank))).unwrap_err(), LogError::IsALeg);
}

#[test]
fn a_missing_leg_resyncs_incrementally_from_the_logs_tracking_bitmap() {
    let mut h = host();
    {
        from_log!(m, mem, h, activate(&h, LogSync::Skip).unwrap());
        m.start(&mut h);
        h.run(&mut m);
        m.leg_gone(&mut h, 1).unwrap();
        write(&mut h, &mut m, 1, 32, 4, 7);
        h.run(&mut m);
        assert_eq!(h.completed(1), Some(Ok(())));
    }
    let a = activate(&h, LogSync::Default).unwrap();
    assert_eq!(a.legs[1].state, LegState::Rebuilding);
    assert!(!a.legs[1].rebuild.full);
    let t = a.tracking_read(1).unwrap();
    assert_eq!(log_bitmap(&h, t.sector)[0], 0b100, "region 2 tracked");
    from_log!(m, mem, h, a);
    assert_eq!(m.status().leg[1].regions_out_of_sync, 1);
    m.start(&mut h);
    h.run(&mut m);
    assert_eq!(h.legs[1][32 * 512..36 * 512], h.legs[0][32 * 512..36 * 512]);
}

#[test]
fn log_no_flush_mutant_lets_data_overtake_the_log_flush() {
    let mut h = host();
    from_log!(m, mem, h, activate(&h, LogSync::Skip).unwrap());
    m.start(&mut h);
    h.run(&mut m);
    m.set_mutant(Mutant::LogNoFlush);
    let before = h.issued.len();
    write(&mut h, &mut m, 1, 0, 4, 1);
    // The data went out with the log write still pending (the bug the simulator must catch).
    assert!(h.issued[before..].iter().any(|io| io.leg != LOG_DEV));
}
