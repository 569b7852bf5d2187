//! Assembly: from the superblocks found on whichever legs are present, in any order, decide the
//! state the mirror starts in — or refuse, naming the leg and the reason. Pure decision logic: the
//! host reads the two superblock slots of every leg ([`slot_positions`]), calls [`assemble`],
//! reads the bitmaps the answer asks for, checks them ([`crate::format::check_bitmap`]), ORs the
//! write-intent bitmaps ([`or_into`]) and builds the core's [`Init`] with [`Assembly::init`].
//! Nothing here writes anything; a refused assembly changes nothing on disk.
//!
//! The rules (docs/FORMAT.md, "Assembly"):
//! - every present leg must decode, be read with the sector size it records, be exactly the size
//!   it records, belong to the same mirror as the majority, and appear once;
//! - **split brain**: two present legs that each consider themselves in sync and each record the
//!   other as not in sync (each ran without the other), or two legs with the same generation but
//!   different leg tables (two histories). Assembly refuses unless the caller names the leg whose
//!   view wins; every leg that ran without it (or knows a newer generation, or a different
//!   history at the same generation) is then rebuilt in full;
//! - otherwise the newest generation wins (ties: higher seq, then lower leg index), and its leg
//!   table decides every leg's state; present legs of an older generation are stale and resync.
use core::fmt;

use crate::format::{newest, DiskLegState, FormatError, Superblock, UuidDisplay};
pub use crate::format::{or_into, slot_positions};
use crate::init::{Init, LegInit, Rebuild};
use crate::types::{LegState, MAX_LEGS};

/// What the host read from one present leg.
///
/// The host finds the slots with [`slot_positions`]`(sectors, sector_size)`. Try the device's
/// logical sector size first (512 on most devices); the superblock records the mirror's sector
/// size, and when it differs assembly answers [`AssembleError::SectorSize`]: read again with the
/// recorded size (for sector sizes up to 4096 the slots sit at the same byte offsets).
#[derive(Clone, Copy, Debug)]
pub struct LegRead<'a> {
    /// How to name the leg in errors (a device path, say).
    pub label: &'a str,
    /// Size of the device in `sector_size` units.
    pub sectors: u64,
    /// Sector size the host used to compute the slot positions and `sectors`.
    pub sector_size: u32,
    /// The bytes of slot 0 and slot 1 (at least `SB_BYTES` each).
    pub slot0: &'a [u8],
    pub slot1: &'a [u8],
}

impl LegRead<'_> {
    /// The superblock this leg's slots hold (the valid newest of the two).
    pub fn superblock(&self) -> Result<Superblock, FormatError> {
        newest(
            Superblock::decode(self.slot0),
            Superblock::decode(self.slot1),
        )
    }
}

/// Why assembly was refused. Every variant that concerns one leg names it by its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssembleError<'a> {
    /// No leg was given.
    NoLegs,
    /// More legs given than a mirror can have.
    TooManyLegs { count: usize },
    /// Neither slot of the leg holds a usable superblock (or a newer format version wrote it).
    Unreadable { leg: &'a str, error: FormatError },
    /// The leg was read with another sector size than the one its superblock records.
    SectorSize {
        leg: &'a str,
        read: u32,
        recorded: u32,
    },
    /// The device is not the size the metadata records for it.
    WrongSize {
        leg: &'a str,
        recorded: u64,
        actual: u64,
    },
    /// The leg belongs to another mirror than the others.
    ForeignMirror {
        leg: &'a str,
        mirror: [u8; 16],
        expected: [u8; 16],
    },
    /// The same leg (same leg UUID) was given twice.
    Duplicate { leg: &'a str, other: &'a str },
    /// The leg's UUID is not in the mirror's newest leg table: it was removed or replaced.
    NotMember { leg: &'a str },
    /// The leg disagrees with the newest superblock on the mirror's geometry.
    Geometry { leg: &'a str, field: &'static str },
    /// Both legs were used without the other; name the one whose data to keep.
    SplitBrain { a: &'a str, b: &'a str },
    /// The leg named to win a split brain is not among the legs given.
    ChosenAbsent { uuid: [u8; 16] },
    /// The leg named to win a split brain does not hold a full copy by its own account.
    ChosenNotInSync { leg: &'a str },
    /// No present leg holds a full copy of the data.
    NoUsableLeg,
}

impl fmt::Display for AssembleError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AssembleError::NoLegs => write!(f, "no leg given"),
            AssembleError::TooManyLegs { count } => {
                write!(f, "{count} legs given, a mirror has at most {MAX_LEGS}")
            }
            AssembleError::Unreadable { leg, error } => write!(f, "{leg}: {error}"),
            AssembleError::SectorSize {
                leg,
                read,
                recorded,
            } => write!(
                f,
                "{leg}: read with {read}-byte sectors but its superblock records {recorded}-byte \
                 sectors; read it again with that sector size"
            ),
            AssembleError::WrongSize {
                leg,
                recorded,
                actual,
            } => write!(
                f,
                "{leg}: the device has {actual} sectors but the mirror's metadata records \
                 {recorded}"
            ),
            AssembleError::ForeignMirror {
                leg,
                mirror,
                expected,
            } => write!(
                f,
                "{leg}: belongs to another mirror ({}), not {}",
                UuidDisplay(&mirror),
                UuidDisplay(&expected)
            ),
            AssembleError::Duplicate { leg, other } => {
                write!(f, "{leg}: is the same leg as {other} (same leg UUID)")
            }
            AssembleError::NotMember { leg } => write!(
                f,
                "{leg}: is no longer a leg of this mirror (removed or replaced)"
            ),
            AssembleError::Geometry { leg, field } => write!(
                f,
                "{leg}: its {field} disagrees with the mirror's newest metadata"
            ),
            AssembleError::SplitBrain { a, b } => write!(
                f,
                "split brain: {a} and {b} were each used without the other; name the leg whose \
                 data to keep (the other will be rebuilt in full)"
            ),
            AssembleError::ChosenAbsent { uuid } => write!(
                f,
                "the leg chosen to win ({}) is not among the legs given",
                UuidDisplay(&uuid)
            ),
            AssembleError::ChosenNotInSync { leg } => write!(
                f,
                "{leg}: cannot be chosen to win, it does not hold a full copy of the data"
            ),
            AssembleError::NoUsableLeg => write!(
                f,
                "no leg given holds a full copy of the data (every present leg is stale, \
                 rebuilding or failed)"
            ),
        }
    }
}

/// Where the host reads one bitmap: `sectors` sectors (of the mirror's sector size) at `sector`
/// on input leg `input` (an index into the slice given to [`assemble`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapRead {
    pub input: usize,
    pub sector: u64,
    pub sectors: u64,
}

/// The outcome of assembly: the state the mirror starts in, and what the host must still read.
#[derive(Clone, Copy, Debug)]
pub struct Assembly {
    /// The superblock whose leg table decides (as decoded from its leg).
    pub winner: Superblock,
    /// Index of the winner's leg in the slice given to [`assemble`].
    pub winner_input: usize,
    /// For each input leg (by its index in the slice), its slot in the mirror.
    pub slot_of_input: [u8; MAX_LEGS],
    /// For each mirror slot, the input leg that fills it.
    pub input_of_slot: [Option<usize>; MAX_LEGS],
    /// The starting state of every slot (slots past `winner.nlegs` are empty).
    pub legs: [LegInit; MAX_LEGS],
    pub authoritative: u8,
    /// Highest generation and seq found on any present leg (the next write must exceed them).
    pub generation: u64,
    pub seq: u64,
    /// Per slot, the newest seq found on that present leg (0 when absent). A writer must not
    /// overwrite a leg's newest slot: the next superblock a leg receives must have a seq of the
    /// other parity than this one.
    pub leg_seq: [u64; MAX_LEGS],
    /// Every present in-sync leg recorded a clean shutdown: no write-intent bitmap is needed.
    pub clean: bool,
    /// A split brain was resolved by the caller's choice.
    pub split_brain_resolved: bool,
    /// Bit k: read the write-intent bitmap of slot k (the present in-sync legs) when not clean.
    pub dirty_from: u32,
    /// Bit k: the tracking bitmap of slot k must be read (an incremental resync uses it).
    pub tracking_needed: u32,
    /// The slot whose copy of the tracking bitmaps is read: the present in-sync leg with the
    /// newest superblock.
    pub tracking_from: Option<u8>,
}

/// What assembly keeps of each present leg's superblock (small, to keep the stack bounded: a
/// decoded superblock is ~1.4 KiB and legs are re-decoded instead of stored).
#[derive(Clone, Copy)]
struct Seen {
    mirror: [u8; 16],
    uuid: [u8; 16],
    index: u8,
    own: DiskLegState,
    generation: u64,
    seq: u64,
    clean: bool,
    sectors: u64,
    sector_size: u32,
    region_sectors: u64,
    data_sectors: u64,
}

impl Seen {
    const NONE: Seen = Seen {
        mirror: [0; 16],
        uuid: [0; 16],
        index: 0,
        own: DiskLegState::Empty,
        generation: 0,
        seq: 0,
        clean: false,
        sectors: 0,
        sector_size: 0,
        region_sectors: 0,
        data_sectors: 0,
    };
}

/// Decode one leg and check what can be checked on it alone.
fn read_leg<'a>(l: &LegRead<'a>) -> Result<Superblock, AssembleError<'a>> {
    let sb = l.superblock().map_err(|error| AssembleError::Unreadable {
        leg: l.label,
        error,
    })?;
    if sb.sector_size != l.sector_size {
        return Err(AssembleError::SectorSize {
            leg: l.label,
            read: l.sector_size,
            recorded: sb.sector_size,
        });
    }
    let recorded = sb.own().sectors;
    if recorded != l.sectors {
        return Err(AssembleError::WrongSize {
            leg: l.label,
            recorded,
            actual: l.sectors,
        });
    }
    Ok(sb)
}

fn bit(mask: u32, i: usize) -> bool {
    i < 32 && mask & (1u32 << i) != 0
}

/// Same leg table (UUIDs and states; rebuild progress may differ).
fn same_history(a: &Superblock, b: &Superblock) -> bool {
    a.nlegs == b.nlegs
        && a.legs
            .iter()
            .zip(b.legs.iter())
            .all(|(x, y)| x.uuid == y.uuid && x.state == y.state)
}

fn label<'a>(legs: &[LegRead<'a>], i: usize) -> &'a str {
    legs.get(i).map_or("?", |l| l.label)
}

fn seen_at(seen: &[Seen], i: usize) -> Seen {
    seen.get(i).copied().unwrap_or(Seen::NONE)
}

/// Decide the mirror's starting state from the legs present (any subset, any order).
/// `choose` names (by leg UUID) the leg whose view wins a split brain; it is consulted only when
/// there is one, but must name a present leg in any case.
pub fn assemble<'a>(
    legs: &[LegRead<'a>],
    choose: Option<[u8; 16]>,
) -> Result<Assembly, AssembleError<'a>> {
    let n = legs.len();
    if n == 0 {
        return Err(AssembleError::NoLegs);
    }
    if n > MAX_LEGS {
        return Err(AssembleError::TooManyLegs { count: n });
    }

    // Pass 1: decode every leg alone.
    let mut seen_buf = [Seen::NONE; MAX_LEGS];
    for (s, l) in seen_buf.iter_mut().zip(legs) {
        let sb = read_leg(l)?;
        *s = Seen {
            mirror: sb.mirror_uuid,
            uuid: sb.leg_uuid(),
            index: sb.leg_index,
            own: sb.own().state,
            generation: sb.generation,
            seq: sb.seq,
            clean: sb.clean,
            sectors: sb.own().sectors,
            sector_size: sb.sector_size,
            region_sectors: sb.region_sectors,
            data_sectors: sb.data_sectors,
        };
    }
    let seen = seen_buf.get(..n).unwrap_or(&[]);

    // Which mirror: the one most legs belong to (ties: the newer generation, then the first).
    let mut reference = Seen::NONE;
    let mut best = (0usize, 0u64);
    for s in seen {
        let count = seen.iter().filter(|o| o.mirror == s.mirror).count();
        if (count, s.generation) > best {
            best = (count, s.generation);
            reference = *s;
        }
    }
    for (i, s) in seen.iter().enumerate() {
        if s.mirror != reference.mirror {
            return Err(AssembleError::ForeignMirror {
                leg: label(legs, i),
                mirror: s.mirror,
                expected: reference.mirror,
            });
        }
    }
    for (j, s) in seen.iter().enumerate() {
        if let Some(i) = seen.iter().take(j).position(|o| o.uuid == s.uuid) {
            return Err(AssembleError::Duplicate {
                leg: label(legs, j),
                other: label(legs, i),
            });
        }
    }

    // Pass 2: who each leg thinks is not in sync. Bit j of `out_of_sync[i]`: leg i's table records
    // leg j as anything but in sync (or does not know it).
    let mut out_of_sync = [0u32; MAX_LEGS];
    for (i, (l, row)) in legs.iter().zip(out_of_sync.iter_mut()).enumerate() {
        let sb = read_leg(l)?;
        for (j, s) in seen.iter().enumerate() {
            let insync = sb
                .find_leg(&s.uuid)
                .and_then(|k| sb.legs.get(usize::from(k)))
                .is_some_and(|e| e.state == DiskLegState::InSync);
            if j != i && !insync {
                *row |= 1u32 << j;
            }
        }
    }
    let mutual = |i: usize, j: usize| -> bool {
        let (a, b) = (seen_at(seen, i), seen_at(seen, j));
        i != j
            && a.own == DiskLegState::InSync
            && b.own == DiskLegState::InSync
            && bit(out_of_sync.get(i).copied().unwrap_or(0), j)
            && bit(out_of_sync.get(j).copied().unwrap_or(0), i)
    };

    // Split brain?
    let mut split: Option<(usize, usize)> = None;
    'outer: for i in 0..n {
        for j in i + 1..n {
            if mutual(i, j) {
                split = Some((i, j));
                break 'outer;
            }
        }
    }
    if split.is_none() {
        for (i, s) in seen.iter().enumerate() {
            let Some(f) = seen
                .iter()
                .take(i)
                .position(|o| o.generation == s.generation)
            else {
                continue;
            };
            let (a, b) = match (legs.get(f), legs.get(i)) {
                (Some(a), Some(b)) => (read_leg(a)?, read_leg(b)?),
                _ => continue,
            };
            if !same_history(&a, &b) {
                split = Some((f, i));
                break;
            }
        }
    }

    let chosen = match choose {
        None => None,
        Some(uuid) => match seen.iter().position(|s| s.uuid == uuid) {
            None => return Err(AssembleError::ChosenAbsent { uuid }),
            Some(x) => Some(x),
        },
    };

    // The winner, and the legs its view does not cover (rebuilt in full).
    let mut forced_full = 0u32;
    let winner_input = match (split, chosen) {
        (Some((a, b)), None) => {
            return Err(AssembleError::SplitBrain {
                a: label(legs, a),
                b: label(legs, b),
            })
        }
        (Some(_), Some(x)) => {
            let sx = seen_at(seen, x);
            if sx.own != DiskLegState::InSync {
                return Err(AssembleError::ChosenNotInSync {
                    leg: label(legs, x),
                });
            }
            let wx = match legs.get(x) {
                Some(l) => read_leg(l)?,
                None => return Err(AssembleError::NoUsableLeg),
            };
            for (j, s) in seen.iter().enumerate() {
                if j == x {
                    continue;
                }
                let diverged = mutual(x, j)
                    || s.generation > sx.generation
                    || (s.generation == sx.generation
                        && match legs.get(j) {
                            Some(l) => !same_history(&wx, &read_leg(l)?),
                            None => false,
                        });
                if diverged {
                    forced_full |= 1u32 << j;
                }
            }
            x
        }
        (None, _) => {
            let mut w = 0usize;
            for (i, s) in seen.iter().enumerate() {
                let cur = seen_at(seen, w);
                if (s.generation, s.seq, core::cmp::Reverse(s.index))
                    > (cur.generation, cur.seq, core::cmp::Reverse(cur.index))
                {
                    w = i;
                }
            }
            w
        }
    };
    let winner = match legs.get(winner_input) {
        Some(l) => read_leg(l)?,
        None => return Err(AssembleError::NoUsableLeg),
    };

    // Membership and geometry against the winner.
    let mut slot_of_input = [0u8; MAX_LEGS];
    let mut input_of_slot: [Option<usize>; MAX_LEGS] = [None; MAX_LEGS];
    for (i, (s, slot)) in seen.iter().zip(slot_of_input.iter_mut()).enumerate() {
        let leg = label(legs, i);
        let k = winner
            .find_leg(&s.uuid)
            .ok_or(AssembleError::NotMember { leg })?;
        if k != s.index {
            return Err(AssembleError::Geometry {
                leg,
                field: "leg index",
            });
        }
        if s.sector_size != winner.sector_size {
            return Err(AssembleError::Geometry {
                leg,
                field: "sector size",
            });
        }
        if s.region_sectors != winner.region_sectors {
            return Err(AssembleError::Geometry {
                leg,
                field: "region size",
            });
        }
        if s.data_sectors != winner.data_sectors {
            return Err(AssembleError::Geometry {
                leg,
                field: "data size",
            });
        }
        let recorded = winner.legs.get(usize::from(k)).map_or(0, |e| e.sectors);
        if recorded != s.sectors {
            return Err(AssembleError::WrongSize {
                leg,
                recorded,
                actual: s.sectors,
            });
        }
        *slot = k;
        if let Some(e) = input_of_slot.get_mut(usize::from(k)) {
            *e = Some(i);
        }
    }

    // Every slot's starting state.
    let full = Rebuild {
        checkpoint: 0,
        full: true,
    };
    let incremental = Rebuild {
        checkpoint: 0,
        full: false,
    };
    let mut out = [LegInit::EMPTY; MAX_LEGS];
    let mut tracking_needed = 0u32;
    let mut leg_seq = [0u64; MAX_LEGS];
    for (k, ((o, w), present)) in out
        .iter_mut()
        .zip(winner.legs.iter())
        .zip(input_of_slot.iter())
        .enumerate()
        .take(usize::from(winner.nlegs))
    {
        let track = 1u32 << k;
        let (state, rebuild) = match present {
            Some(i) => {
                let s = seen_at(seen, *i);
                if let Some(q) = leg_seq.get_mut(k) {
                    *q = s.seq;
                }
                if bit(forced_full, *i) {
                    (LegState::Rebuilding, full)
                } else {
                    match w.state {
                        DiskLegState::InSync => (LegState::InSync, incremental),
                        DiskLegState::Missing => {
                            tracking_needed |= track;
                            (LegState::Rebuilding, incremental)
                        }
                        DiskLegState::Rebuilding => {
                            if !w.full {
                                tracking_needed |= track;
                            }
                            let r = Rebuild {
                                checkpoint: w.checkpoint,
                                full: w.full,
                            };
                            (LegState::Rebuilding, r)
                        }
                        DiskLegState::Failed | DiskLegState::Empty => (LegState::Rebuilding, full),
                    }
                }
            }
            None => match w.state {
                DiskLegState::InSync => (LegState::Missing, incremental),
                DiskLegState::Missing => {
                    tracking_needed |= track;
                    (LegState::Missing, incremental)
                }
                DiskLegState::Rebuilding if !w.full => {
                    tracking_needed |= track;
                    (LegState::Missing, incremental)
                }
                // A full rebuild interrupted by the leg vanishing starts over when it returns.
                DiskLegState::Rebuilding | DiskLegState::Failed => (LegState::Failed, full),
                DiskLegState::Empty => (LegState::Empty, LegInit::EMPTY.rebuild),
            },
        };
        *o = LegInit {
            state,
            uuid: w.uuid,
            sectors: w.sectors,
            rebuild,
        };
    }

    // In-sync present legs: the authoritative one, whose bitmaps to read, clean or not.
    let present_insync = |k: usize| -> bool {
        input_of_slot.get(k).is_some_and(|p| p.is_some())
            && out.get(k).is_some_and(|l| l.state == LegState::InSync)
    };
    let mut dirty_from = 0u32;
    let mut clean = true;
    let mut tracking_from: Option<u8> = None;
    let mut newest_key = (0u64, 0u64);
    for k in 0..usize::from(winner.nlegs) {
        if !present_insync(k) {
            continue;
        }
        let s = match input_of_slot.get(k).copied().flatten() {
            Some(i) => seen_at(seen, i),
            None => continue,
        };
        dirty_from |= 1u32 << k;
        clean &= s.clean;
        if tracking_from.is_none() || (s.generation, s.seq) > newest_key {
            tracking_from = Some(k as u8);
            newest_key = (s.generation, s.seq);
        }
    }
    let authoritative = if present_insync(usize::from(winner.authoritative)) {
        winner.authoritative
    } else {
        match (0..usize::from(winner.nlegs)).find(|&k| present_insync(k)) {
            Some(k) => k as u8,
            None => return Err(AssembleError::NoUsableLeg),
        }
    };

    Ok(Assembly {
        winner,
        winner_input,
        slot_of_input,
        input_of_slot,
        legs: out,
        authoritative,
        generation: seen.iter().map(|s| s.generation).max().unwrap_or(0),
        seq: seen.iter().map(|s| s.seq).max().unwrap_or(0),
        leg_seq,
        clean,
        split_brain_resolved: split.is_some(),
        dirty_from,
        tracking_needed,
        tracking_from,
    })
}

impl Assembly {
    /// Regions of the mirror.
    pub fn regions(&self) -> u64 {
        self.winner.regions()
    }

    /// Bytes of one bitmap as read from disk (`bitmap_sectors * sector_size`).
    pub fn bitmap_bytes(&self) -> u64 {
        self.winner
            .bitmap_sectors
            .saturating_mul(u64::from(self.winner.sector_size))
    }

    fn leg_layout(&self, slot: u8) -> Option<crate::format::Layout> {
        let leg = self.legs.get(usize::from(slot))?;
        crate::format::layout(
            leg.sectors,
            self.winner.sector_size,
            self.winner.region_sectors,
            self.winner.data_sectors,
        )
        .ok()
    }

    /// The write-intent bitmap of mirror slot `slot`, if the host must read it (the mirror was
    /// not shut down cleanly and the leg is present and in sync). The host ORs all of them.
    pub fn dirty_read(&self, slot: u8) -> Option<BitmapRead> {
        if self.clean || !bit(self.dirty_from, usize::from(slot)) {
            return None;
        }
        let input = self
            .input_of_slot
            .get(usize::from(slot))
            .copied()
            .flatten()?;
        let l = self.leg_layout(slot)?;
        Some(BitmapRead {
            input,
            sector: l.bitmap_start,
            sectors: l.bitmap_sectors,
        })
    }

    /// The tracking bitmap of mirror slot `k`, if the host must read it (from the leg
    /// `tracking_from`).
    pub fn tracking_read(&self, k: u8) -> Option<BitmapRead> {
        if !bit(self.tracking_needed, usize::from(k)) {
            return None;
        }
        let from = self.tracking_from?;
        let input = self
            .input_of_slot
            .get(usize::from(from))
            .copied()
            .flatten()?;
        let l = self.leg_layout(from)?;
        Some(BitmapRead {
            input,
            sector: l.tracking(k)?,
            sectors: l.bitmap_sectors,
        })
    }

    /// The core's starting state. `dirty` is the OR of the write-intent bitmaps listed by
    /// [`Assembly::dirty_read`] (ignored, and may be None, when `clean`; when not clean the host
    /// must pass it); `tracking[k]` the bitmap listed by [`Assembly::tracking_read`]`(k)` (others
    /// are ignored). Every bitmap must have passed [`crate::format::check_bitmap`].
    pub fn init<'b>(
        &self,
        dirty: Option<&'b [u8]>,
        tracking: [Option<&'b [u8]>; MAX_LEGS],
    ) -> Init<'b> {
        let mut t: [Option<&'b [u8]>; MAX_LEGS] = [None; MAX_LEGS];
        for (k, (dst, src)) in t.iter_mut().zip(tracking.iter()).enumerate() {
            if bit(self.tracking_needed, k) {
                *dst = *src;
            }
        }
        Init {
            mirror_uuid: self.winner.mirror_uuid,
            name: self.winner.name,
            generation: self.generation,
            seq: self.seq,
            authoritative: self.authoritative,
            legs: self.legs,
            dirty: if self.clean { None } else { dirty },
            tracking: t,
        }
    }
}
