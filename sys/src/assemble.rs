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

use crate::format::{
    decode_newest, decode_newest_into, DiskLegState, FormatError, Superblock, UuidDisplay,
};
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
        decode_newest(self.slot0, self.slot1)
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
    /// Bit k: read the write-intent bitmap of slot k (every present leg; clean or not).
    pub dirty_from: u32,
    /// Bit k: the tracking bitmap of slot k must be read (an incremental resync uses it).
    pub tracking_needed: u32,
    /// The slot whose copy of the tracking bitmaps is read: the present in-sync leg with the
    /// newest superblock.
    pub tracking_from: Option<u8>,
}

/// The legs given to assembly, by input index: a slice of [`LegRead`], or a host's own table
/// turned into a [`LegRead`] on demand (a kernel host need not build an array of them).
pub trait Legs<'a> {
    /// How many legs are given.
    fn count(&self) -> usize;
    /// Input leg `i` (`None` past the end). Must give the same answer every time it is asked.
    fn leg(&self, i: usize) -> Option<LegRead<'a>>;
}

impl<'a> Legs<'a> for [LegRead<'a>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn leg(&self, i: usize) -> Option<LegRead<'a>> {
        self.get(i).copied()
    }
}

/// What assembly keeps of each present leg's superblock (small, to keep the stack bounded: a
/// decoded superblock is ~1.6 KiB and legs are re-decoded instead of stored). The leg's size and
/// sector size are not kept: [`read_leg_into`] checked that they are the ones its [`LegRead`]
/// gives.
#[derive(Clone, Copy)]
struct Seen {
    mirror: [u8; 16],
    uuid: [u8; 16],
    generation: u64,
    seq: u64,
    region_sectors: u64,
    data_sectors: u64,
    index: u8,
    own: DiskLegState,
    clean: bool,
}

impl Seen {
    const NONE: Seen = Seen {
        mirror: [0; 16],
        uuid: [0; 16],
        generation: 0,
        seq: 0,
        region_sectors: 0,
        data_sectors: 0,
        index: 0,
        own: DiskLegState::Empty,
        clean: false,
    };
}

/// The working memory of [`assemble_into`] (about 2.3 KiB): a summary of every present leg.
/// A host with a small stack can keep it elsewhere (the C glue keeps it in the caller's output
/// structure until it writes the answer there).
pub struct Workspace {
    seen: [Seen; MAX_LEGS],
}

impl Workspace {
    pub const NEW: Workspace = Workspace {
        seen: [Seen::NONE; MAX_LEGS],
    };
}

/// Decode one leg into `sb` and check what can be checked on it alone: that it was read with the
/// sector size it records, and is the size it records.
fn read_leg_into<'a>(l: &LegRead<'a>, sb: &mut Superblock) -> Result<(), AssembleError<'a>> {
    decode_newest_into(l.slot0, l.slot1, sb).map_err(|error| AssembleError::Unreadable {
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
    Ok(())
}

/// Input leg `i` of `legs` (which has it: every caller iterates below `count()`).
fn input<'a, L: Legs<'a> + ?Sized>(legs: &L, i: usize) -> Result<LegRead<'a>, AssembleError<'a>> {
    legs.leg(i).ok_or(AssembleError::NoUsableLeg)
}

fn bit(mask: u32, i: usize) -> bool {
    i < 32 && mask & (1u32 << i) != 0
}

// Every helper below decodes into the one superblock `sb` its caller lends (the answer's
// `winner`, before the winner is known): assembly never holds more than that one decoded
// superblock, so that it fits a kernel thread's stack (tests/kernel-stack-report.sh).

/// What assembly keeps of one leg.
fn summarize<'a>(l: &LegRead<'a>, sb: &mut Superblock) -> Result<Seen, AssembleError<'a>> {
    read_leg_into(l, sb)?;
    let own = sb.own();
    Ok(Seen {
        mirror: sb.mirror_uuid,
        uuid: own.uuid,
        generation: sb.generation,
        seq: sb.seq,
        region_sectors: sb.region_sectors,
        data_sectors: sb.data_sectors,
        index: sb.leg_index,
        own: own.state,
        clean: sb.clean,
    })
}

/// Bit j set: leg `l` (input `i`) records input leg j as out of the mirror (failed, missing,
/// removed) or does not know it — and leg j went on after that record was made (its own newest
/// generation is at or past the generation at which it was recorded out). A leg recorded as
/// rebuilding is still in the mirror: it takes every write, so a leg that saw it rebuilding did
/// not run without it. A leg recorded out at a generation it never reached is merely stale.
fn out_of_sync_row<'a>(
    l: &LegRead<'a>,
    i: usize,
    seen: &[Seen],
    sb: &mut Superblock,
) -> Result<u32, AssembleError<'a>> {
    read_leg_into(l, sb)?;
    let mut row = 0u32;
    for (j, s) in seen.iter().enumerate().take(32) {
        // Removed slots too: they record when the leg was removed.
        let entry = sb
            .legs
            .iter()
            .take(usize::from(sb.nlegs))
            .find(|e| e.uuid == s.uuid && s.uuid != [0; 16]);
        let member = entry
            .is_some_and(|e| matches!(e.state, DiskLegState::InSync | DiskLegState::Rebuilding));
        let went_on = entry.is_none_or(|e| s.generation >= e.since);
        if j != i && !member && went_on {
            row |= 1u32 << j;
        }
    }
    Ok(row)
}

/// The two legs' tables hold the same UUIDs in the same states (rebuild progress may differ):
/// the same history. One table is copied out (uuids and states only), the other compared in
/// place.
fn same_history<'a>(
    a: &LegRead<'a>,
    b: &LegRead<'a>,
    sb: &mut Superblock,
) -> Result<bool, AssembleError<'a>> {
    read_leg_into(a, sb)?;
    let nlegs = sb.nlegs;
    let mut table = [([0u8; 16], DiskLegState::Empty); MAX_LEGS];
    for (dst, src) in table.iter_mut().zip(sb.legs.iter()) {
        *dst = (src.uuid, src.state);
    }
    read_leg_into(b, sb)?;
    Ok(nlegs == sb.nlegs
        && table
            .iter()
            .zip(sb.legs.iter())
            .all(|(x, e)| *x == (e.uuid, e.state)))
}

fn label<'a, L: Legs<'a> + ?Sized>(legs: &L, i: usize) -> &'a str {
    legs.leg(i).map_or("?", |l| l.label)
}

fn seen_at(seen: &[Seen], i: usize) -> Seen {
    seen.get(i).copied().unwrap_or(Seen::NONE)
}

/// Everything up to the choice of the winner: per-leg checks, mirror identity, duplicates, split
/// brain. Returns the winner's input index, the inputs to rebuild in full, whether a split brain
/// was resolved. Fills `seen_buf[..legs.count()]`; decodes into `sb` (scratch).
fn decide<'a, L: Legs<'a> + ?Sized>(
    legs: &L,
    choose: Option<[u8; 16]>,
    seen_buf: &mut [Seen; MAX_LEGS],
    sb: &mut Superblock,
) -> Result<(usize, u32, bool), AssembleError<'a>> {
    let n = legs.count();
    // Pass 1: decode every leg alone.
    for (i, s) in seen_buf.iter_mut().enumerate().take(n) {
        *s = summarize(&input(legs, i)?, sb)?;
    }
    let seen: &[Seen] = seen_buf.get(..n).unwrap_or(&[]);

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

    // Pass 2: who each leg thinks has left. Bit j of `out_of_sync[i]`: leg i's table records leg
    // j as out of the mirror (or does not know it).
    let mut out_of_sync = [0u32; MAX_LEGS];
    for (i, row) in out_of_sync.iter_mut().enumerate().take(n) {
        *row = out_of_sync_row(&input(legs, i)?, i, seen, sb)?;
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
            if !same_history(&input(legs, f)?, &input(legs, i)?, sb)? {
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
            let lx = input(legs, x)?;
            for (j, s) in seen.iter().enumerate() {
                if j == x {
                    continue;
                }
                let diverged = mutual(x, j)
                    || s.generation > sx.generation
                    || (s.generation == sx.generation && !same_history(&lx, &input(legs, j)?, sb)?);
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
    Ok((winner_input, forced_full, split.is_some()))
}

/// What one device says about itself: its newest valid superblock, read as it is, without
/// judging it against any other leg (that is assembly's job: [`assemble`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub mirror_uuid: [u8; 16],
    /// NUL-padded.
    pub name: [u8; 32],
    /// This device's own leg UUID and slot in the leg table.
    pub leg_uuid: [u8; 16],
    pub leg_index: u8,
    /// Leg slots of the mirror.
    pub nlegs: u8,
    /// The state this device's superblock records for the device itself, and its rebuild
    /// progress when that is `Rebuilding`.
    pub state: DiskLegState,
    pub rebuild_full: bool,
    pub rebuild_checkpoint: u64,
    pub generation: u64,
    pub seq: u64,
    /// The superblock says the mirror was shut down cleanly.
    pub clean: bool,
    pub sector_size: u32,
    pub region_sectors: u64,
    pub data_sectors: u64,
    /// This leg's size as recorded (the device's size: [`identify`] checks it).
    pub leg_sectors: u64,
    /// Bit k: the leg table this device holds has a leg (in any state) in slot k.
    pub members: u32,
}

/// Read what one device says about itself. Refuses only a device that cannot be read as a leg:
/// no valid superblock slot ([`AssembleError::Unreadable`]), read with another sector size than
/// the one it records ([`AssembleError::SectorSize`]: read again with that size), or not the size
/// it records ([`AssembleError::WrongSize`]: its metadata is not at the end of this device).
/// Whether the device is stale, rebuilding, failed or removed is not judged: a host that finds
/// devices one by one (a GEOM taste) recognises every member of a mirror by its UUIDs and leaves
/// the decision to [`assemble`] over all of them. Needs one decoded superblock (~1.6 KiB) of
/// stack.
pub fn identify<'a>(leg: &LegRead<'a>) -> Result<Identity, AssembleError<'a>> {
    let mut sb = Superblock::ZEROED;
    read_leg_into(leg, &mut sb)?;
    let own = sb.own();
    Ok(Identity {
        mirror_uuid: sb.mirror_uuid,
        name: sb.name,
        leg_uuid: own.uuid,
        leg_index: sb.leg_index,
        nlegs: sb.nlegs,
        state: own.state,
        rebuild_full: own.full,
        rebuild_checkpoint: own.checkpoint,
        generation: sb.generation,
        seq: sb.seq,
        clean: sb.clean,
        sector_size: sb.sector_size,
        region_sectors: sb.region_sectors,
        data_sectors: sb.data_sectors,
        leg_sectors: own.sectors,
        members: sb
            .legs
            .iter()
            .take(usize::from(sb.nlegs))
            .enumerate()
            .filter(|(_, e)| e.state != DiskLegState::Empty)
            .fold(0u32, |m, (k, _)| m | 1u32 << k),
    })
}

/// Decide the mirror's starting state from the legs present (any subset, any order).
/// `choose` names (by leg UUID) the leg whose view wins a split brain; it is consulted only when
/// there is one, but must name a present leg in any case.
///
/// The answer is ~4.3 KiB and the work ~2.3 KiB more: a host with a small stack (a kernel
/// thread) calls [`assemble_into`] with memory of its own instead.
pub fn assemble<'a>(
    legs: &[LegRead<'a>],
    choose: Option<[u8; 16]>,
) -> Result<Assembly, AssembleError<'a>> {
    let mut work = Workspace::NEW;
    let mut a = Assembly::EMPTY;
    assemble_into(legs, choose, &mut work, &mut a)?;
    Ok(a)
}

/// [`assemble`], building the answer in `out` and working in `work`, both the caller's memory:
/// the call itself needs about 1 KiB of stack. On error `out` holds an unspecified value.
pub fn assemble_into<'a, L: Legs<'a> + ?Sized>(
    legs: &L,
    choose: Option<[u8; 16]>,
    work: &mut Workspace,
    out: &mut Assembly,
) -> Result<(), AssembleError<'a>> {
    let n = legs.count();
    if n == 0 {
        return Err(AssembleError::NoLegs);
    }
    if n > MAX_LEGS {
        return Err(AssembleError::TooManyLegs { count: n });
    }

    // Phase 1 picks the winner (decoding each leg into `out.winner` in turn); then the winner's
    // table decides every slot (the answer is built in place).
    let (winner_input, forced_full, resolved) =
        decide(legs, choose, &mut work.seen, &mut out.winner)?;
    let seen: &[Seen] = work.seen.get(..n).unwrap_or(&[]);
    read_leg_into(&input(legs, winner_input)?, &mut out.winner)?;
    out.winner_input = winner_input;
    out.slot_of_input = [0; MAX_LEGS];
    out.input_of_slot = [None; MAX_LEGS];
    out.legs = [LegInit::EMPTY; MAX_LEGS];
    out.authoritative = 0;
    out.generation = seen.iter().map(|s| s.generation).max().unwrap_or(0);
    out.seq = seen.iter().map(|s| s.seq).max().unwrap_or(0);
    out.leg_seq = [0; MAX_LEGS];
    out.clean = true;
    out.split_brain_resolved = resolved;
    out.dirty_from = 0;
    out.tracking_needed = 0;
    out.tracking_from = None;
    out.settle(legs, seen, forced_full)
}

impl Assembly {
    /// A blank answer (no legs): the starting value of memory given to [`assemble_into`].
    pub const EMPTY: Assembly = Assembly {
        winner: Superblock::ZEROED,
        winner_input: 0,
        slot_of_input: [0; MAX_LEGS],
        input_of_slot: [None; MAX_LEGS],
        legs: [LegInit::EMPTY; MAX_LEGS],
        authoritative: 0,
        generation: 0,
        seq: 0,
        leg_seq: [0; MAX_LEGS],
        clean: true,
        split_brain_resolved: false,
        dirty_from: 0,
        tracking_needed: 0,
        tracking_from: None,
    };
}

impl Assembly {
    /// Membership and geometry of every present leg against the winner, then every slot's
    /// starting state, the authoritative leg, the bitmaps to read.
    fn settle<'a, L: Legs<'a> + ?Sized>(
        &mut self,
        legs: &L,
        seen: &[Seen],
        forced_full: u32,
    ) -> Result<(), AssembleError<'a>> {
        let winner = &self.winner;
        // Membership and geometry against the winner.
        for (i, (s, slot)) in seen.iter().zip(self.slot_of_input.iter_mut()).enumerate() {
            let l = input(legs, i)?;
            let leg = l.label;
            let k = winner
                .find_leg(&s.uuid)
                .ok_or(AssembleError::NotMember { leg })?;
            if k != s.index {
                return Err(AssembleError::Geometry {
                    leg,
                    field: "leg index",
                });
            }
            // read_leg_into checked that the leg records the sector size and size it was read
            // with.
            if l.sector_size != winner.sector_size {
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
            if recorded != l.sectors {
                return Err(AssembleError::WrongSize {
                    leg,
                    recorded,
                    actual: l.sectors,
                });
            }
            *slot = k;
            if let Some(e) = self.input_of_slot.get_mut(usize::from(k)) {
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
        for (k, ((o, w), present)) in self
            .legs
            .iter_mut()
            .zip(winner.legs.iter())
            .zip(self.input_of_slot.iter())
            .enumerate()
            .take(usize::from(winner.nlegs))
        {
            let track = 1u32 << k;
            let (state, rebuild) = match present {
                Some(i) => {
                    let s = seen_at(seen, *i);
                    if let Some(q) = self.leg_seq.get_mut(k) {
                        *q = s.seq;
                    }
                    if bit(forced_full, *i) {
                        (LegState::Rebuilding, full)
                    } else {
                        match w.state {
                            DiskLegState::InSync => (LegState::InSync, incremental),
                            DiskLegState::Missing => {
                                self.tracking_needed |= track;
                                (LegState::Rebuilding, incremental)
                            }
                            DiskLegState::Rebuilding => {
                                if !w.full {
                                    self.tracking_needed |= track;
                                }
                                let r = Rebuild {
                                    checkpoint: w.checkpoint,
                                    full: w.full,
                                };
                                (LegState::Rebuilding, r)
                            }
                            DiskLegState::Failed | DiskLegState::Empty => {
                                (LegState::Rebuilding, full)
                            }
                        }
                    }
                }
                None => match w.state {
                    DiskLegState::InSync => (LegState::Missing, incremental),
                    DiskLegState::Missing => {
                        self.tracking_needed |= track;
                        (LegState::Missing, incremental)
                    }
                    DiskLegState::Rebuilding if !w.full => {
                        self.tracking_needed |= track;
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
                since: w.since,
            };
        }

        // In-sync present legs: the authoritative one, whose bitmaps to read, clean or not.
        let present_insync = |k: usize| -> bool {
            self.input_of_slot.get(k).is_some_and(|p| p.is_some())
                && self
                    .legs
                    .get(k)
                    .is_some_and(|l| l.state == LegState::InSync)
        };
        let mut newest_key = (0u64, 0u64);
        for k in 0..usize::from(winner.nlegs) {
            // Every present leg's write-intent bitmap counts, not only the in-sync ones': a
            // rebuilding leg already copied past a region takes writes there once its own
            // bitmap is durable, so its bitmap may be the only record that the region is dirty.
            if self.input_of_slot.get(k).is_some_and(|p| p.is_some()) {
                self.dirty_from |= 1u32 << k;
            }
            if !present_insync(k) {
                continue;
            }
            let s = match self.input_of_slot.get(k).copied().flatten() {
                Some(i) => seen_at(seen, i),
                None => continue,
            };
            self.clean &= s.clean;
            if self.tracking_from.is_none() || (s.generation, s.seq) > newest_key {
                self.tracking_from = Some(k as u8);
                newest_key = (s.generation, s.seq);
            }
        }
        self.authoritative = if present_insync(usize::from(winner.authoritative)) {
            winner.authoritative
        } else {
            match (0..usize::from(winner.nlegs)).find(|&k| present_insync(k)) {
                Some(k) => k as u8,
                None => return Err(AssembleError::NoUsableLeg),
            }
        };
        Ok(())
    }
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

    /// The write-intent bitmap of mirror slot `slot`, if the host must read it (the leg is
    /// present and in sync). The host ORs all of them. Read even after a clean shutdown: the
    /// bits a clean shutdown keeps are regions still to be resynced.
    pub fn dirty_read(&self, slot: u8) -> Option<BitmapRead> {
        if !bit(self.dirty_from, usize::from(slot)) {
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
    /// [`Assembly::dirty_read`] (the host must pass it whenever `dirty_read` listed any); `tracking[k]` the bitmap listed by [`Assembly::tracking_read`]`(k)` (others
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
            // Honoured even after a clean shutdown: a clean shutdown clears every bit it can, and
            // the ones it keeps mark regions some leg still has to be resynced in (a crash
            // recovery cut short by the shutdown).
            dirty,
            tracking: t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{max_data_sectors, DiskLeg, SB_BYTES};
    use std::format;
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    const LEG: u64 = 1 << 21;
    const MIRROR: [u8; 16] = [0x4d; 16];

    fn uuid(k: usize) -> [u8; 16] {
        [10 + k as u8; 16]
    }

    struct Disk {
        label: String,
        sectors: u64,
        ss: u32,
        slots: [Vec<u8>; 2],
    }

    impl Disk {
        fn new(label: &str, sectors: u64, ss: u32) -> Disk {
            let n = SB_BYTES.max(ss as usize);
            Disk {
                label: label.to_string(),
                sectors,
                ss,
                slots: [vec![0; n], vec![0; n]],
            }
        }
        /// Writes `state` as leg `k` sees it, with sequence number `seq`.
        fn put(&mut self, state: &Superblock, k: u8, seq: u64) {
            let mut sb = state.for_leg(k).unwrap();
            sb.seq = seq;
            sb.encode(&mut self.slots[(seq & 1) as usize]).unwrap();
        }
        fn read(&self) -> LegRead<'_> {
            LegRead {
                label: &self.label,
                sectors: self.sectors,
                sector_size: self.ss,
                slot0: &self.slots[0],
                slot1: &self.slots[1],
            }
        }
    }

    const LABELS: [&str; 4] = ["/dev/a", "/dev/b", "/dev/c", "/dev/d"];

    /// A fresh n-leg mirror (generation 1, seq 0, clean, all in sync) written to n disks.
    fn mirror(n: usize) -> (Superblock, Vec<Disk>) {
        let data = max_data_sectors(LEG, 512, 1024);
        let legs: Vec<DiskLeg> = (0..n)
            .map(|k| DiskLeg {
                uuid: uuid(k),
                state: DiskLegState::InSync,
                full: false,
                checkpoint: 0,
                sectors: LEG,
                since: 0,
            })
            .collect();
        let sb = Superblock::new(MIRROR, [0; 32], 512, 1024, data, &legs, 0, 0).unwrap();
        let mut disks: Vec<Disk> = (0..n).map(|k| Disk::new(LABELS[k], LEG, 512)).collect();
        for (k, d) in disks.iter_mut().enumerate() {
            d.put(&sb, k as u8, 0);
        }
        (sb, disks)
    }

    /// A state change: generation + 1, leg `k` in `state`.
    fn change(sb: &Superblock, k: usize, state: DiskLegState) -> Superblock {
        let mut s = *sb;
        s.generation += 1;
        s.legs[k].state = state;
        s.legs[k].full = false;
        s.legs[k].checkpoint = 0;
        s
    }

    fn reads<'d>(disks: &'d [Disk], order: &[usize]) -> Vec<LegRead<'d>> {
        order.iter().map(|&i| disks[i].read()).collect()
    }

    fn states(a: &Assembly) -> Vec<(LegState, Rebuild)> {
        (0..a.winner.nlegs as usize)
            .map(|k| (a.legs[k].state, a.legs[k].rebuild))
            .collect()
    }

    const INC: Rebuild = Rebuild {
        checkpoint: 0,
        full: false,
    };
    const FULL: Rebuild = Rebuild {
        checkpoint: 0,
        full: true,
    };

    #[test]
    fn identify_reports_what_a_device_says_without_judging() {
        let (sb, mut disks) = mirror(3);
        // Leg 2 was being rebuilt (a full copy, 5 regions done) when the mirror stopped; leg 1
        // is stale (it missed that generation).
        let mut s = change(&sb, 2, DiskLegState::Rebuilding);
        s.legs[2].full = true;
        s.legs[2].checkpoint = 5;
        s.clean = false;
        s.name[..4].copy_from_slice(b"data");
        disks[0].put(&s, 0, 1);
        disks[2].put(&s, 2, 1);
        let id = identify(&disks[2].read()).unwrap();
        assert_eq!(id.mirror_uuid, MIRROR);
        assert_eq!(&id.name[..5], b"data\0");
        assert_eq!((id.leg_uuid, id.leg_index, id.nlegs), (uuid(2), 2, 3));
        assert_eq!(id.state, DiskLegState::Rebuilding);
        assert_eq!((id.rebuild_full, id.rebuild_checkpoint), (true, 5));
        assert_eq!((id.generation, id.seq, id.clean), (2, 1, false));
        assert_eq!((id.sector_size, id.region_sectors), (512, 1024));
        assert_eq!((id.data_sectors, id.leg_sectors), (sb.data_sectors, LEG));
        assert_eq!(id.members, 0b111);
        // Alone, that device assembles into nothing usable; identify does not judge.
        assert_eq!(
            assemble(&reads(&disks, &[2]), None).unwrap_err(),
            AssembleError::NoUsableLeg
        );
        // The stale leg says what it last knew.
        let stale = identify(&disks[1].read()).unwrap();
        assert_eq!(
            (stale.state, stale.generation, stale.seq),
            (DiskLegState::InSync, 1, 0)
        );
        assert!(stale.clean);
        // Together they assemble, and the rebuilding leg resumes from its checkpoint.
        let a = assemble(&reads(&disks, &[2, 1, 0]), None).unwrap();
        assert_eq!(
            a.legs[2].rebuild,
            Rebuild {
                checkpoint: 5,
                full: true
            }
        );
        assert_eq!(a.legs[2].state, LegState::Rebuilding);
    }

    #[test]
    fn identify_refuses_only_what_cannot_be_read_as_a_leg() {
        let (_, disks) = mirror(2);
        let blank = Disk::new("/dev/blank", LEG, 512);
        assert!(matches!(
            identify(&blank.read()),
            Err(AssembleError::Unreadable {
                leg: "/dev/blank",
                error: FormatError::Blank
            })
        ));
        let mut wrong = disks[0].read();
        wrong.sector_size = 4096;
        wrong.sectors = LEG / 8;
        assert!(matches!(
            identify(&wrong),
            Err(AssembleError::SectorSize {
                read: 4096,
                recorded: 512,
                ..
            })
        ));
        let mut small = disks[0].read();
        small.sectors = LEG - 8;
        assert!(matches!(
            identify(&small),
            Err(AssembleError::WrongSize {
                recorded: LEG,
                actual,
                ..
            }) if actual == LEG - 8
        ));
        // One good slot is enough (the other torn).
        let mut torn = Disk::new("/dev/a", LEG, 512);
        torn.slots[0] = disks[0].slots[0].clone();
        torn.slots[1][100] = 0xff;
        assert_eq!(identify(&torn.read()).unwrap().leg_index, 0);
    }

    #[test]
    fn all_clean() {
        let (_, disks) = mirror(2);
        for order in [[0, 1], [1, 0]] {
            let a = assemble(&reads(&disks, &order), None).unwrap();
            assert_eq!(
                states(&a),
                vec![(LegState::InSync, INC), (LegState::InSync, INC)]
            );
            assert!(a.clean);
            assert_eq!(a.authoritative, 0);
            assert_eq!((a.generation, a.seq), (1, 0));
            assert_eq!(
                a.input_of_slot[0],
                Some(order.iter().position(|&i| i == 0).unwrap())
            );
            assert_eq!(a.slot_of_input[0], order[0] as u8);
            // Clean or not, the write-intent bitmaps are read: bits a clean shutdown kept are
            // regions still to be resynced.
            assert!(a.dirty_read(0).is_some());
            assert_eq!(a.tracking_needed, 0);
            let bm = [0xffu8; 512];
            let init = a.init(Some(&bm), [Some(&bm[..]); MAX_LEGS]);
            assert!(init.dirty.is_some() && init.tracking.iter().all(|t| t.is_none()));
            assert_eq!(init.legs[1].uuid, uuid(1));
            assert_eq!(init.legs[1].sectors, LEG);
            assert_eq!(init.legs[2].state, LegState::Empty);
            assert_eq!(init.mirror_uuid, MIRROR);
            assert!(!a.split_brain_resolved);
        }
    }

    #[test]
    fn unclean_reads_every_in_sync_write_intent_bitmap() {
        let (sb, mut disks) = mirror(3);
        let mut dirty = sb;
        dirty.clean = false;
        disks[0].put(&dirty, 0, 1);
        disks[1].put(&dirty, 1, 1);
        // Leg 2 missed the "not clean" write: still counts as dirty because the others are.
        let a = assemble(&reads(&disks, &[2, 0, 1]), None).unwrap();
        assert!(!a.clean);
        let lay = sb.for_leg(0).unwrap().layout().unwrap();
        for k in 0..3u8 {
            let r = a.dirty_read(k).unwrap();
            assert_eq!(r.input, [1, 2, 0][k as usize]);
            assert_eq!(
                (r.sector, r.sectors),
                (lay.bitmap_start, lay.bitmap_sectors)
            );
        }
        assert_eq!(a.dirty_read(3), None);
        assert_eq!(a.bitmap_bytes(), 512);
        let bm = [1u8; 1];
        let init = a.init(Some(&bm), [None; MAX_LEGS]);
        assert_eq!(init.dirty, Some(&bm[..]));
        assert_eq!(a.leg_seq[..3], [1, 1, 0]);
        assert_eq!(a.seq, 1);
    }

    #[test]
    fn stale_leg_recorded_missing_resyncs_incrementally() {
        let (sb, mut disks) = mirror(2);
        let gone = change(&sb, 1, DiskLegState::Missing);
        disks[0].put(&gone, 0, 1);
        for order in [[0, 1], [1, 0]] {
            let a = assemble(&reads(&disks, &order), None).unwrap();
            assert_eq!(
                states(&a),
                vec![(LegState::InSync, INC), (LegState::Rebuilding, INC)]
            );
            assert_eq!(a.generation, 2);
            assert_eq!(a.tracking_needed, 0b10);
            assert_eq!(a.tracking_from, Some(0));
            let lay = gone.for_leg(0).unwrap().layout().unwrap();
            let t = a.tracking_read(1).unwrap();
            assert_eq!(t.input, order.iter().position(|&i| i == 0).unwrap());
            assert_eq!(
                (t.sector, t.sectors),
                (lay.tracking_start + lay.bitmap_sectors, 1)
            );
            assert_eq!(a.tracking_read(0), None);
            let bm = [3u8; 1];
            let init = a.init(None, [Some(&bm[..]); MAX_LEGS]);
            assert_eq!(init.tracking[1], Some(&bm[..]));
            assert_eq!(init.tracking[0], None);
            assert_eq!(init.generation, 2);
        }
    }

    #[test]
    fn failed_or_unknown_leg_resyncs_in_full() {
        let (sb, mut disks) = mirror(2);
        let failed = change(&sb, 1, DiskLegState::Failed);
        disks[0].put(&failed, 0, 1);
        let a = assemble(&reads(&disks, &[1, 0]), None).unwrap();
        assert_eq!(
            states(&a),
            vec![(LegState::InSync, INC), (LegState::Rebuilding, FULL)]
        );
        assert_eq!(a.tracking_needed, 0);
    }

    #[test]
    fn rebuild_progress_is_kept() {
        let (sb, mut disks) = mirror(2);
        let mut rb = change(&sb, 1, DiskLegState::Rebuilding);
        rb.legs[1].checkpoint = 1;
        rb.legs[1].full = true;
        disks[0].put(&rb, 0, 1);
        disks[1].put(&rb, 1, 1);
        let a = assemble(&reads(&disks, &[0, 1]), None).unwrap();
        assert_eq!(
            states(&a)[1],
            (
                LegState::Rebuilding,
                Rebuild {
                    checkpoint: 1,
                    full: true
                }
            )
        );
        rb.legs[1].full = false;
        disks[0].put(&rb, 0, 2);
        let a = assemble(&reads(&disks, &[0, 1]), None).unwrap();
        assert_eq!(
            states(&a)[1],
            (
                LegState::Rebuilding,
                Rebuild {
                    checkpoint: 1,
                    full: false
                }
            )
        );
        assert_eq!(a.tracking_needed, 0b10);
    }

    #[test]
    fn absent_legs() {
        let (sb, mut disks) = mirror(4);
        // Leg 1 missing, leg 2 rebuilding in full, leg 3 rebuilding incrementally; only 0 present.
        let mut s = change(&sb, 1, DiskLegState::Missing);
        s = change(&s, 2, DiskLegState::Rebuilding);
        s.legs[2].full = true;
        s = change(&s, 3, DiskLegState::Rebuilding);
        disks[0].put(&s, 0, 1);
        let a = assemble(&reads(&disks, &[0]), None).unwrap();
        assert_eq!(
            states(&a),
            vec![
                (LegState::InSync, INC),
                (LegState::Missing, INC),
                (LegState::Failed, FULL),
                (LegState::Missing, INC)
            ]
        );
        assert_eq!(a.tracking_needed, 0b1010);
        // An in-sync leg that is simply absent becomes missing, with a fresh tracking bitmap.
        let (_, disks) = mirror(2);
        let a = assemble(&reads(&disks, &[1]), None).unwrap();
        assert_eq!(
            states(&a),
            vec![(LegState::Missing, INC), (LegState::InSync, INC)]
        );
        assert_eq!(a.tracking_needed, 0);
        assert_eq!(
            a.authoritative, 1,
            "the recorded authoritative leg is absent"
        );
        assert_eq!(a.winner_input, 0);
    }

    #[test]
    fn interrupted_state_write_leaves_an_in_sync_leg_in_sync() {
        // Generation 2 reached leg 0 but not leg 1 (crash mid-update); leg 1 is still in sync in
        // the newest view, so it stays in sync.
        let (sb, mut disks) = mirror(3);
        let s = change(&sb, 2, DiskLegState::Failed);
        disks[0].put(&s, 0, 1);
        let a = assemble(&reads(&disks, &[1, 0]), None).unwrap();
        assert_eq!(
            states(&a),
            vec![
                (LegState::InSync, INC),
                (LegState::InSync, INC),
                (LegState::Failed, FULL)
            ]
        );
    }

    #[test]
    fn torn_newest_slot_falls_back() {
        let (sb, mut disks) = mirror(2);
        let gone = change(&sb, 1, DiskLegState::Missing);
        disks[0].put(&gone, 0, 1);
        disks[0].slots[1][700] ^= 0xff; // the state write tore
        let a = assemble(&reads(&disks, &[0, 1]), None).unwrap();
        assert_eq!(
            states(&a),
            vec![(LegState::InSync, INC), (LegState::InSync, INC)]
        );
        assert_eq!(a.generation, 1);
    }

    #[test]
    fn no_usable_leg() {
        let (sb, mut disks) = mirror(2);
        let s = change(&sb, 1, DiskLegState::Rebuilding);
        disks[1].put(&s, 1, 1);
        assert_eq!(
            assemble(&reads(&disks, &[1]), None).unwrap_err(),
            AssembleError::NoUsableLeg
        );
        assert_eq!(assemble(&[], None).unwrap_err(), AssembleError::NoLegs);
    }

    #[test]
    fn refusals_name_the_leg() {
        let (sb, mut disks) = mirror(3);
        // Another mirror's leg, given first or last.
        let (_, other) = mirror(1);
        let mut foreign = Superblock::decode(&other[0].slots[0]).unwrap();
        foreign.mirror_uuid = [0x77; 16];
        disks[2].put(&foreign, 0, 0);
        for order in [[2, 0, 1], [0, 1, 2]] {
            let e = assemble(&reads(&disks, &order), None).unwrap_err();
            assert_eq!(
                e,
                AssembleError::ForeignMirror {
                    leg: "/dev/c",
                    mirror: [0x77; 16],
                    expected: MIRROR
                }
            );
            assert!(
                e.to_string()
                    .starts_with("/dev/c: belongs to another mirror"),
                "{e}"
            );
        }
        disks[2].put(&sb, 2, 0);
        // Wrong size.
        let mut r = reads(&disks, &[0, 1]);
        r[1].sectors = LEG + 1;
        let e = assemble(&r, None).unwrap_err();
        assert_eq!(
            e,
            AssembleError::WrongSize {
                leg: "/dev/b",
                recorded: LEG,
                actual: LEG + 1
            }
        );
        // Read with the wrong sector size.
        let mut r = reads(&disks, &[0, 1]);
        r[0].sector_size = 4096;
        r[0].sectors = LEG / 8;
        let e = assemble(&r, None).unwrap_err();
        assert_eq!(
            e,
            AssembleError::SectorSize {
                leg: "/dev/a",
                read: 4096,
                recorded: 512
            }
        );
        // Newer format version in either slot.
        let mut r = reads(&disks, &[0, 1]);
        let mut v2 = r[1].slot1.to_vec();
        v2[..SB_BYTES].copy_from_slice(r[1].slot0);
        v2[8] = 2;
        r[1].slot1 = &v2;
        let e = assemble(&r, None).unwrap_err();
        assert_eq!(
            e,
            AssembleError::Unreadable {
                leg: "/dev/b",
                error: FormatError::UnsupportedVersion(2)
            }
        );
        assert!(
            e.to_string().contains("/dev/b") && e.to_string().contains("version 2"),
            "{e}"
        );
        // Not a dmirror leg at all.
        let blank = vec![0u8; SB_BYTES];
        let mut r = reads(&disks, &[0, 1]);
        r[1].slot0 = &blank;
        r[1].slot1 = &blank;
        let e = assemble(&r, None).unwrap_err();
        assert_eq!(
            e,
            AssembleError::Unreadable {
                leg: "/dev/b",
                error: FormatError::Blank
            }
        );
        // The same leg twice (two paths to one disk).
        let mut r = reads(&disks, &[0, 1]);
        let dup = LegRead {
            label: "/dev/b-again",
            ..r[1]
        };
        r.push(dup);
        let e = assemble(&r, None).unwrap_err();
        assert_eq!(
            e,
            AssembleError::Duplicate {
                leg: "/dev/b-again",
                other: "/dev/b"
            }
        );
        // A leg replaced while it was away: its UUID is no longer in the table.
        let mut s = change(&sb, 1, DiskLegState::Rebuilding);
        s.legs[1].uuid = [0x99; 16];
        s.legs[1].full = true;
        disks[0].put(&s, 0, 1);
        let e = assemble(&reads(&disks, &[1, 0]), None).unwrap_err();
        assert_eq!(e, AssembleError::NotMember { leg: "/dev/b" });
        assert!(e.to_string().contains("no longer a leg"));
        // More legs than a mirror can have.
        let many = vec![reads(&disks, &[0])[0]; MAX_LEGS + 1];
        assert_eq!(
            assemble(&many, None).unwrap_err(),
            AssembleError::TooManyLegs {
                count: MAX_LEGS + 1
            }
        );
    }

    #[test]
    fn geometry_disagreement_is_refused() {
        // Two legs of the same mirror UUID that disagree on the data size.
        let (sb, mut disks) = mirror(2);
        let mut s = change(&sb, 0, DiskLegState::InSync);
        s.data_sectors -= 1;
        disks[0].put(&s, 0, 1);
        let e = assemble(&reads(&disks, &[0, 1]), None).unwrap_err();
        assert_eq!(
            e,
            AssembleError::Geometry {
                leg: "/dev/b",
                field: "data size"
            }
        );
    }

    #[test]
    fn split_brain_refused_then_resolved_by_choice() {
        for gen_a in [2u64, 5] {
            let (sb, mut disks) = mirror(2);
            // Leg a ran alone (b missing), then leg b ran alone (a missing).
            let mut sa = change(&sb, 1, DiskLegState::Missing);
            sa.generation = gen_a;
            disks[0].put(&sa, 0, 1);
            let sbb = change(&sb, 0, DiskLegState::Missing);
            disks[1].put(&sbb, 1, 1);
            for order in [[0, 1], [1, 0]] {
                let r = reads(&disks, &order);
                let e = assemble(&r, None).unwrap_err();
                let AssembleError::SplitBrain { a, b } = e else {
                    panic!("{e:?}")
                };
                let mut pair = [a, b];
                pair.sort();
                assert_eq!(pair, ["/dev/a", "/dev/b"]);
                assert!(e.to_string().contains("split brain"));
                let x = assemble(&r, Some(uuid(0))).unwrap();
                assert!(x.split_brain_resolved);
                assert_eq!(
                    states(&x),
                    vec![(LegState::InSync, INC), (LegState::Rebuilding, FULL)]
                );
                assert_eq!(x.authoritative, 0);
                assert_eq!(x.generation, gen_a.max(2));
                let y = assemble(&r, Some(uuid(1))).unwrap();
                assert_eq!(
                    states(&y),
                    vec![(LegState::Rebuilding, FULL), (LegState::InSync, INC)]
                );
                assert_eq!(y.authoritative, 1);
                assert_eq!(y.input_of_slot[1], Some(y.winner_input));
                assert_eq!(
                    assemble(&r, Some([0x55; 16])).unwrap_err(),
                    AssembleError::ChosenAbsent { uuid: [0x55; 16] }
                );
            }
        }
    }

    /// A `Legs` that is not a slice (as the C glue's), to drive `assemble_into` the way a
    /// kernel host does.
    struct ByIndex<'d>(&'d [Disk], &'d [usize]);

    impl<'d> Legs<'d> for ByIndex<'d> {
        fn count(&self) -> usize {
            self.1.len()
        }
        fn leg(&self, i: usize) -> Option<LegRead<'d>> {
            self.1.get(i).map(|&k| self.0[k].read())
        }
    }

    #[test]
    fn assemble_into_reused_memory_gives_what_assemble_gives() {
        // One workspace and one answer, reused across very different assemblies (the C glue
        // reuses a caller's out struct; nothing of a previous answer may leak into the next).
        let mut work = Workspace::NEW;
        let mut out = Assembly::EMPTY;
        let (sb, mut disks) = mirror(3);
        let mut s = change(&sb, 2, DiskLegState::Rebuilding);
        s.legs[2].checkpoint = 7;
        s.clean = false;
        disks[0].put(&s, 0, 1);
        disks[2].put(&s, 2, 1);
        let (sb2, mut split) = mirror(2);
        let sa = change(&sb2, 1, DiskLegState::Missing);
        split[0].put(&sa, 0, 1);
        let sbb = change(&sb2, 0, DiskLegState::Missing);
        split[1].put(&sbb, 1, 1);
        type Case<'c> = (&'c [Disk], &'c [usize], Option<[u8; 16]>);
        let cases: [Case<'_>; 5] = [
            (&disks, &[2, 0, 1], None),
            (&split, &[1, 0], Some(uuid(1))),
            (&disks, &[1], None),
            (&split, &[0, 1], None),
            (&disks, &[0, 2], None),
        ];
        for (d, order, choose) in cases {
            let expected = assemble(&reads(d, order), choose);
            let got = assemble_into(&ByIndex(d, order), choose, &mut work, &mut out);
            match (expected, got) {
                (Ok(a), Ok(())) => assert_eq!(format!("{a:?}"), format!("{out:?}")),
                (Err(e), Err(g)) => assert_eq!(e, g),
                (e, g) => panic!("assemble {e:?} but assemble_into {g:?}"),
            }
        }
    }

    /// Found by the crash simulator: leg a's last word (older) saw leg b rebuilding — still in
    /// the mirror, taking every write — and leg b's newer word records a as failed. That is a
    /// stale leg, not a split brain: b wins and a is rebuilt in full.
    #[test]
    fn a_leg_that_saw_the_other_rebuilding_is_stale_not_split() {
        let (sb, mut disks) = mirror(2);
        let mut sa = change(&sb, 1, DiskLegState::Rebuilding);
        sa.legs[1].full = true;
        disks[0].put(&sa, 0, 1);
        let mut sbb = change(&sa, 0, DiskLegState::Failed);
        sbb.legs[1].state = DiskLegState::InSync;
        sbb.legs[1].full = false;
        sbb.generation += 1;
        disks[1].put(&sbb, 1, 2);
        for order in [[0, 1], [1, 0]] {
            let x = assemble(&reads(&disks, &order), None).unwrap();
            assert_eq!(
                states(&x),
                vec![(LegState::Rebuilding, FULL), (LegState::InSync, INC)]
            );
            assert_eq!(x.authoritative, 1);
        }
    }

    /// The generation at which a leg was recorded out decides (crash simulator, seed 2066):
    /// leg b went missing at generation 2 and came back; leg a failed at generation 4, its own
    /// last word being generation 3. Each records the other as out, but a never reached the
    /// generation at which it was recorded failed: a is stale. Had both gone on after being
    /// recorded out, it would be a split brain whatever their generation numbers.
    #[test]
    fn departure_generation_tells_stale_from_split() {
        let (sb, mut disks) = mirror(2);
        let mut sa = change(&sb, 1, DiskLegState::Missing);
        sa.generation = 3;
        sa.legs[1].since = 2;
        disks[0].put(&sa, 0, 1);
        let mut sbb = change(&sb, 0, DiskLegState::Failed);
        sbb.generation = 6;
        sbb.legs[0].since = 4;
        sbb.legs[1].since = 5;
        disks[1].put(&sbb, 1, 2);
        for order in [[0, 1], [1, 0]] {
            let x = assemble(&reads(&disks, &order), None).unwrap();
            assert_eq!(
                states(&x),
                vec![(LegState::Rebuilding, FULL), (LegState::InSync, INC)]
            );
        }
        // Both went on after the other recorded them out: split brain, generations notwithstanding.
        let mut sbb2 = change(&sb, 0, DiskLegState::Missing);
        sbb2.generation = 6;
        sbb2.legs[0].since = 2;
        disks[1].put(&sbb2, 1, 3);
        assert!(matches!(
            assemble(&reads(&disks, &[0, 1]), None),
            Err(AssembleError::SplitBrain { .. })
        ));
    }

    #[test]
    fn same_generation_different_history_is_split_brain() {
        let (sb, mut disks) = mirror(3);
        let sa = change(&sb, 2, DiskLegState::Missing);
        disks[0].put(&sa, 0, 1);
        let sbb = change(&sb, 2, DiskLegState::Failed);
        disks[1].put(&sbb, 1, 1);
        let r = reads(&disks, &[0, 1]);
        assert!(matches!(
            assemble(&r, None),
            Err(AssembleError::SplitBrain { .. })
        ));
        let x = assemble(&r, Some(uuid(0))).unwrap();
        assert_eq!(
            states(&x),
            vec![
                (LegState::InSync, INC),
                (LegState::Rebuilding, FULL),
                (LegState::Missing, INC)
            ]
        );
    }

    #[test]
    fn three_way_split_and_a_stale_leg() {
        // Legs a, b, c in sync at generation 1. Then c ran alone; then a and b ran together.
        let (sb, mut disks) = mirror(4);
        let mut sc = change(&sb, 0, DiskLegState::Missing);
        sc = change(&sc, 1, DiskLegState::Missing);
        sc = change(&sc, 3, DiskLegState::Missing);
        disks[2].put(&sc, 2, 1);
        let mut sab = change(&sb, 2, DiskLegState::Missing);
        sab = change(&sab, 3, DiskLegState::Missing);
        disks[0].put(&sab, 0, 1);
        disks[1].put(&sab, 1, 1);
        // Leg d is stale (generation 1, believes everyone in sync).
        let r = reads(&disks, &[3, 2, 1, 0]);
        assert!(matches!(
            assemble(&r, None),
            Err(AssembleError::SplitBrain { .. })
        ));
        let x = assemble(&r, Some(uuid(0))).unwrap();
        assert_eq!(
            states(&x),
            vec![
                (LegState::InSync, INC),
                (LegState::InSync, INC),
                (LegState::Rebuilding, FULL),
                (LegState::Rebuilding, INC)
            ]
        );
        let y = assemble(&r, Some(uuid(2))).unwrap();
        assert_eq!(
            states(&y),
            vec![
                (LegState::Rebuilding, FULL),
                (LegState::Rebuilding, FULL),
                (LegState::InSync, INC),
                (LegState::Rebuilding, INC)
            ]
        );
        assert_eq!(y.tracking_from, Some(2));
        // Choosing a leg that does not hold a full copy by its own account.
        let mut sd = change(&sb, 3, DiskLegState::Rebuilding);
        sd.generation = 1;
        disks[3].put(&sd, 3, 1);
        let r = reads(&disks, &[3, 2, 1, 0]);
        assert_eq!(
            assemble(&r, Some(uuid(3))).unwrap_err(),
            AssembleError::ChosenNotInSync { leg: "/dev/d" }
        );
    }

    #[test]
    fn any_order_gives_the_same_answer() {
        let (sb, mut disks) = mirror(4);
        let mut s = change(&sb, 3, DiskLegState::Missing);
        s.authoritative = 1;
        s.clean = false;
        for k in 0..3u8 {
            disks[k as usize].put(&s, k, 1);
        }
        let s2 = change(&s, 2, DiskLegState::Failed);
        disks[0].put(&s2, 0, 2);
        disks[1].put(&s2, 1, 2);
        let base = assemble(&reads(&disks, &[0, 1, 2, 3]), None).unwrap();
        assert_eq!(
            states(&base),
            vec![
                (LegState::InSync, INC),
                (LegState::InSync, INC),
                (LegState::Rebuilding, FULL),
                (LegState::Rebuilding, INC)
            ]
        );
        assert_eq!(base.authoritative, 1);
        assert!(!base.clean);
        // Every present leg contributes its write-intent bitmap (a rebuilding leg may hold writes).
        assert_eq!(base.dirty_from, 0b1111);
        let mut perm = [0usize, 1, 2, 3];
        // All 24 orders (Heap's algorithm).
        let mut c = [0usize; 4];
        let mut i = 0;
        let mut seen = 0;
        loop {
            let a = assemble(&reads(&disks, &perm), None).unwrap();
            assert_eq!(states(&a), states(&base));
            assert_eq!(a.authoritative, base.authoritative);
            assert_eq!(
                (a.generation, a.seq, a.clean),
                (base.generation, base.seq, base.clean)
            );
            for (input, &disk) in perm.iter().enumerate() {
                assert_eq!(a.slot_of_input[input] as usize, disk);
            }
            seen += 1;
            while i < 4 && c[i] >= i {
                c[i] = 0;
                i += 1;
            }
            if i >= 4 {
                break;
            }
            if i % 2 == 0 {
                perm.swap(0, i);
            } else {
                perm.swap(c[i], i);
            }
            c[i] += 1;
            i = 0;
        }
        assert_eq!(seen, 24);
    }

    #[test]
    fn four_k_sectors() {
        let legs = [DiskLeg {
            uuid: uuid(0),
            state: DiskLegState::InSync,
            full: false,
            checkpoint: 0,
            sectors: 1 << 18,
            since: 0,
        }];
        let data = max_data_sectors(1 << 18, 4096, 128);
        let sb = Superblock::new(MIRROR, [0; 32], 4096, 128, data, &legs, 0, 0).unwrap();
        let mut d = Disk::new("/dev/4k", 1 << 18, 4096);
        d.put(&sb, 0, 0);
        let a = assemble(&[d.read()], None).unwrap();
        assert_eq!(a.legs[0].state, LegState::InSync);
        assert_eq!(a.bitmap_bytes(), 4096);
    }

    #[test]
    fn every_error_displays_a_sentence() {
        let all = [
            AssembleError::NoLegs,
            AssembleError::TooManyLegs { count: 40 },
            AssembleError::Unreadable {
                leg: "x",
                error: FormatError::BadMagic,
            },
            AssembleError::SectorSize {
                leg: "x",
                read: 512,
                recorded: 4096,
            },
            AssembleError::WrongSize {
                leg: "x",
                recorded: 1,
                actual: 2,
            },
            AssembleError::ForeignMirror {
                leg: "x",
                mirror: [1; 16],
                expected: [2; 16],
            },
            AssembleError::Duplicate {
                leg: "x",
                other: "y",
            },
            AssembleError::NotMember { leg: "x" },
            AssembleError::Geometry {
                leg: "x",
                field: "data size",
            },
            AssembleError::SplitBrain { a: "x", b: "y" },
            AssembleError::ChosenAbsent { uuid: [3; 16] },
            AssembleError::ChosenNotInSync { leg: "x" },
            AssembleError::NoUsableLeg,
        ];
        for e in all {
            assert!(e.to_string().len() > 10, "{e:?}");
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A random but valid view of a 3-leg mirror (random states, generation, seq, clean flag),
    /// written into `slots` as leg `k` would hold it; sometimes damaged afterwards.
    fn random_leg(rng: &mut Rng, base: &Superblock, k: u8, slots: &mut [Vec<u8>]) {
        let mut s = *base;
        let states = [
            DiskLegState::InSync,
            DiskLegState::InSync,
            DiskLegState::Rebuilding,
            DiskLegState::Failed,
            DiskLegState::Missing,
        ];
        for leg in s.legs.iter_mut().take(3) {
            leg.state = states[rng.below(5) as usize];
            if leg.state == DiskLegState::Rebuilding {
                leg.full = rng.below(2) == 0;
                leg.checkpoint = rng.below(3);
            }
        }
        if rng.below(4) == 0 {
            s.legs[1].uuid = [0x66; 16]; // a replaced leg
        }
        s.generation = 1 + rng.below(4);
        s.clean = rng.below(2) == 0;
        s.authoritative = rng.below(3) as u8;
        let seq = rng.below(6);
        let mut sb = s.for_leg(k).unwrap();
        sb.seq = seq;
        sb.encode(&mut slots[(seq & 1) as usize]).unwrap();
        if seq > 0 && rng.below(2) == 0 {
            sb.seq = seq - 1;
            sb.generation = 1;
            sb.encode(&mut slots[((seq - 1) & 1) as usize]).unwrap();
        } else {
            slots[((seq + 1) & 1) as usize].fill(0);
        }
        if rng.below(8) == 0 {
            let slot = rng.below(2) as usize;
            let at = rng.below(1536) as usize;
            slots[slot][at] ^= 1 << rng.below(8);
        }
    }

    /// 200,000 random and mutated inputs: decoding, slot choice and bitmap checks never panic,
    /// whatever decodes re-encodes to the same bytes, and every error has a message. Every 32nd
    /// iteration also assembles 1 to 3 random legs (random valid views, sometimes damaged, read
    /// with random sizes, with a random choice), which never panics either.
    #[test]
    fn random_bytes_never_panic() {
        let (sb, mut disks) = mirror(3);
        let s = change(&sb, 2, DiskLegState::Missing);
        disks[0].put(&s, 0, 1);
        disks[1].put(&s, 1, 1);
        let valid: Vec<Vec<u8>> = disks.iter().flat_map(|d| d.slots.iter().cloned()).collect();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let pool: Vec<u8> = (0..1 << 16).map(|_| rng.next() as u8).collect();
        let mut buf = vec![0u8; SB_BYTES];
        let mut slots = vec![vec![0u8; SB_BYTES]; 6];
        let (mut decoded, mut assembled, mut errors) = (0u32, 0u32, 0u32);
        let check = |e: &dyn core::fmt::Display| assert!(!e.to_string().is_empty());
        for iter in 0..200_000u32 {
            match rng.below(8) {
                0..=2 => {
                    let at = rng.below((pool.len() - SB_BYTES) as u64) as usize;
                    buf.copy_from_slice(&pool[at..at + SB_BYTES]);
                }
                3 => {
                    let at = rng.below((pool.len() - SB_BYTES) as u64) as usize;
                    buf.copy_from_slice(&pool[at..at + SB_BYTES]);
                    buf[..8].copy_from_slice(&crate::format::MAGIC);
                    buf[8..12].copy_from_slice(&1u32.to_le_bytes());
                }
                _ => {
                    buf.copy_from_slice(&valid[rng.below(valid.len() as u64) as usize]);
                    for _ in 0..=rng.below(6) {
                        let at = if rng.below(4) == 0 {
                            rng.below(SB_BYTES as u64)
                        } else {
                            rng.below(1536)
                        };
                        buf[at as usize] = rng.next() as u8;
                    }
                }
            }
            if rng.below(2) == 0 {
                buf[12..16].fill(0);
                let c = crate::format::crc32c(0, &buf);
                buf[12..16].copy_from_slice(&c.to_le_bytes());
            }
            let cut = rng.below(SB_BYTES as u64 + 1) as usize;
            let d = Superblock::decode(&buf);
            match &d {
                Ok(sb) => {
                    decoded += 1;
                    let mut again = vec![0u8; SB_BYTES];
                    sb.encode(&mut again).unwrap();
                    assert_eq!(again, buf);
                }
                Err(e) => check(e),
            }
            let short = Superblock::decode(&buf[..cut]);
            let (a, b) = if rng.below(2) == 0 {
                (d, short)
            } else {
                (short, d)
            };
            if let Err(e) = crate::format::newest(a, b) {
                check(&e);
            }
            if let Err(e) = crate::format::check_bitmap(&buf[..cut], rng.below(40_000)) {
                check(&e);
            }
            if iter % 32 != 0 {
                continue;
            }
            let n = 1 + rng.below(3) as usize;
            for k in 0..n {
                random_leg(&mut rng, &sb, k as u8, &mut slots[2 * k..2 * k + 2]);
            }
            let labels = ["r0", "r1", "r2"];
            let legs: Vec<LegRead<'_>> = (0..n)
                .map(|i| LegRead {
                    label: labels[i],
                    sectors: if rng.below(16) == 0 { rng.next() } else { LEG },
                    sector_size: if rng.below(16) == 0 { 4096 } else { 512 },
                    slot0: &slots[2 * i],
                    slot1: &slots[2 * i + 1],
                })
                .collect();
            let choose = match rng.below(3) {
                0 => None,
                1 => Some(uuid(rng.below(3) as usize)),
                _ => Some([rng.next() as u8; 16]),
            };
            match assemble(&legs, choose) {
                Ok(a) => {
                    assembled += 1;
                    assert_eq!(a.legs[a.authoritative as usize].state, LegState::InSync);
                    assert!(a.input_of_slot[a.authoritative as usize].is_some());
                    let init = a.init(None, [None; MAX_LEGS]);
                    assert_eq!(init.legs, a.legs);
                    for k in 0..MAX_LEGS as u8 {
                        let _ = (a.dirty_read(k), a.tracking_read(k));
                    }
                }
                Err(e) => {
                    errors += 1;
                    check(&e);
                }
            }
        }
        std::eprintln!("random: {decoded} decoded, {assembled} assembled, {errors} refused");
        // The inputs reach past the checksum and into the assembly logic, not only the magic.
        assert!(decoded > 300, "{decoded}");
        assert!(assembled > 300 && errors > 300, "{assembled} {errors}");
    }
}
