//! Fuzzes everything that reads metadata from disk: superblock decoding, the choice between the
//! two slots, bitmap checks, and assembly of up to four legs.
//!
//! Input: one flag byte, then per leg 8 bytes of device size (little-endian) and two slots of
//! `SLOT_IN` bytes each (zero-padded to a full superblock; a valid superblock is zero past its
//! leg table anyway, so short inputs reach every field). Flags: bits 0-1 number of legs - 1,
//! bit 2 recompute each slot's CRC (so field validation is reached), bit 3 read with 4096-byte
//! sectors, bit 4 name a leg to win a split brain (the UUID of the first valid leg, or the next
//! 16 input bytes when bit 5 is set).
#![no_main]

use dmirror::assemble::{assemble, LegRead};
use dmirror::format::{check_bitmap, crc32c, decode_newest, newest, Superblock, OFF_CRC, SB_BYTES};
use libfuzzer_sys::fuzz_target;

const SLOT_IN: usize = 1536;

fn slot(input: &[u8], fix_crc: bool) -> [u8; SB_BYTES] {
    let mut b = [0u8; SB_BYTES];
    let n = input.len().min(SB_BYTES);
    b[..n].copy_from_slice(&input[..n]);
    if fix_crc {
        b[OFF_CRC..OFF_CRC + 4].fill(0);
        let c = crc32c(0, &b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&c.to_le_bytes());
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let nlegs = usize::from(flags & 3) + 1;
    let fix = flags & 4 != 0;
    let sector_size = if flags & 8 != 0 { 4096 } else { 512 };

    let mut sizes = [0u64; 4];
    let mut slots = [[[0u8; SB_BYTES]; 2]; 4];
    let mut present = 0;
    for k in 0..nlegs {
        if rest.len() < 8 {
            break;
        }
        let (size, tail) = rest.split_at(8);
        sizes[k] = u64::from_le_bytes(size.try_into().unwrap());
        let take = tail.len().min(SLOT_IN);
        slots[k][0] = slot(&tail[..take], fix);
        let tail = &tail[take..];
        let take1 = tail.len().min(SLOT_IN);
        slots[k][1] = slot(&tail[..take1], fix);
        rest = &tail[take1..];
        present += 1;
    }

    let mut first_uuid = None;
    for k in 0..present {
        let a = Superblock::decode(&slots[k][0]);
        let b = Superblock::decode(&slots[k][1]);
        if let Err(e) = &a {
            assert!(!e.to_string().is_empty());
        }
        let n = newest(a, b);
        assert_eq!(decode_newest(&slots[k][0], &slots[k][1]), n);
        match n {
            Ok(sb) => {
                first_uuid.get_or_insert(sb.leg_uuid());
                let mut again = [0u8; SB_BYTES];
                sb.encode(&mut again).expect("a decoded superblock encodes");
                assert_eq!(Superblock::decode(&again), Ok(sb));
                let _ = sb.layout();
                let _ = check_bitmap(
                    &slots[k][1][..sb.bitmap_sectors.min(8) as usize * 512],
                    sb.regions(),
                );
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let _ = check_bitmap(&slots[k][1], sizes[k] % (1 << 16));
    }

    let choose = if flags & 16 == 0 {
        None
    } else if flags & 32 != 0 && rest.len() >= 16 {
        Some(rest[..16].try_into().unwrap())
    } else {
        first_uuid
    };
    let labels = ["leg0", "leg1", "leg2", "leg3"];
    let reads: Vec<LegRead<'_>> = (0..present)
        .map(|k| LegRead {
            label: labels[k],
            sectors: sizes[k],
            sector_size,
            slot0: &slots[k][0],
            slot1: &slots[k][1],
        })
        .collect();
    match assemble(&reads, choose) {
        Ok(a) => {
            let auth = usize::from(a.authoritative);
            assert_eq!(a.legs[auth].state, dmirror::LegState::InSync);
            assert!(a.input_of_slot[auth].is_some());
            let _ = a.init(None, [None; 32]);
            for k in 0..32u8 {
                let _ = (a.dirty_read(k), a.tracking_read(k));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // The same slots as a disk log device's (docs/FORMAT.md section 9): a log superblock
    // round-trips through decode_log and is never a leg's, and activation from it never panics
    // and keeps its promises.
    use dmirror::logdev::{assemble_log, LogRead, LogSync, LogTable};
    if present > 0 {
        if let Ok(sb) = dmirror::format::decode_newest_log(&slots[0][0], &slots[0][1]) {
            assert!(sb.is_log_device());
            let mut again = [0u8; SB_BYTES];
            sb.encode(&mut again).expect("a decoded log superblock encodes");
            assert_eq!(Superblock::decode_log(&again), Ok(sb));
            assert!(Superblock::decode(&again).is_err());
        }
        let legs = [sizes[1].max(1), sizes[2].max(1), sizes[3].max(1)];
        let nlegs = usize::from(flags >> 6) % 3 + 1;
        let table = LogTable {
            leg_sectors: &legs[..nlegs],
            data_sectors: sizes[1].max(1),
            region_sectors: 1 << (sizes[0] % 24),
            sector_size,
            sync: match flags >> 4 & 3 {
                0 => LogSync::Default,
                1 => LogSync::Force,
                _ => LogSync::Skip,
            },
            uuid: [7; 16],
        };
        let log = LogRead {
            sectors: sizes[0],
            sector_size,
            slot0: &slots[0][0],
            slot1: &slots[0][1],
            tail: if present > 1 {
                Some((&slots[1][0][..], &slots[1][1][..]))
            } else {
                None
            },
        };
        match assemble_log(&log, &table) {
            Ok(a) => {
                let auth = usize::from(a.authoritative);
                assert_eq!(a.legs[auth].state, dmirror::LegState::InSync);
                let _ = a.init(None, [None; 32]);
                let _ = a.dirty_read();
                for k in 0..32u8 {
                    let _ = a.tracking_read(k);
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
