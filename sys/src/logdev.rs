//! Activation with a disk log (dm-mirror's `disk <log_dev> <region_size> [sync|nosync]`): from
//! what the host read of the log device's two superblock slots and the table's legs, decide the
//! state the mirror starts in — a new mirror on a blank log device, the recorded state on a valid
//! one — or refuse, saying why. Pure decision logic, like [`crate::assemble`]: nothing is read or
//! written here, and a refused activation changes nothing on any device.
//!
//! The legs of a disk-log mirror carry only data (they are plain volumes; a dm table names them by
//! position, which is how they are identified). The log device holds the superblock — marked as a
//! log device's, `leg_index == LOG_DEVICE_INDEX` — with the leg table (each leg's uuid, size,
//! state and `since`, generated at first activation), the write-intent bitmap and the per-leg
//! tracking bitmaps, laid out from the start of the device (docs/FORMAT.md, section 9).
//!
//! The rules:
//! - **blank or unlabelled** log device (no dmirror magic in either slot: all zeros, or what lvm2
//!   or another program left there): a new mirror. Leg 0 is the source; the others resync in full
//!   unless `nosync`. Nothing on the legs is read.
//! - **valid** log device: the newest slot's state, checked against the table: same number of
//!   legs, data size, region size and sector size, and each leg exactly the size recorded.
//!   Legs recorded in sync stay in sync (their dirty regions, from the write-intent bitmap,
//!   resync from the authoritative leg); a leg recorded missing resyncs incrementally from its
//!   tracking bitmap; rebuilding ones continue from their checkpoint; failed or removed ones
//!   resync in full. `sync` forces a full resync of every leg but the authoritative one;
//!   `nosync` changes nothing on a valid log.
//! - **corrupt or foreign** log device (dmirror magic but neither slot valid, a leg's superblock,
//!   a newer format, another geometry, a device too small): refused.
use core::fmt;

use crate::format::{self, DiskLegState, FormatError, Superblock};
use crate::init::{Init, LegInit, Rebuild};
use crate::types::{LegState, MAX_LEGS};

/// What the host read of the log device. The slots are at sectors
/// `log_layout(..).slots` = `[0, slot_sectors]`: bytes 0 and 4096 for sector sizes up to 4096.
#[derive(Clone, Copy, Debug)]
pub struct LogRead<'a> {
    /// Size of the log device in `sector_size` units.
    pub sectors: u64,
    /// Sector size the host read with (must be the table's).
    pub sector_size: u32,
    /// The bytes of slot 0 and slot 1 (at least `SB_BYTES` each).
    pub slot0: &'a [u8],
    pub slot1: &'a [u8],
    /// The two slots a dmirror LEG of this device's size would have at its end
    /// ([`format::slot_positions`]), if the host read them: a blank log device that holds a
    /// leg's metadata there is a leg given as a log by mistake, and is refused
    /// ([`LogError::IsALeg`]) rather than overwritten.
    pub tail: Option<(&'a [u8], &'a [u8])>,
}

/// Whether the table asks for a resync (`sync`/`nosync` of the `disk` log arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSync {
    /// Neither: a new log resyncs everything, a valid one only what it records.
    Default,
    /// `sync`: resync every leg in full, even with a valid log.
    Force,
    /// `nosync`: a new log starts with every leg in sync (the legs are known identical, e.g.
    /// new and zeroed). No effect on a valid log.
    Skip,
}

/// The mirror the table describes.
#[derive(Clone, Copy, Debug)]
pub struct LogTable<'a> {
    /// Size of every leg's device (from the leg's offset to its end), in sectors; one per leg.
    pub leg_sectors: &'a [u64],
    pub data_sectors: u64,
    pub region_sectors: u64,
    pub sector_size: u32,
    pub sync: LogSync,
    /// Identity for a new mirror (random, from the host; not all zero). Leg uuids are derived
    /// from it. Ignored when the log is valid.
    pub uuid: [u8; 16],
}

/// Why activation with a disk log was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The table itself is unusable (no legs, too many, a bad geometry, a zero uuid).
    Table(&'static str),
    /// The log device is smaller than the layout needs.
    TooSmall { needed: u64, actual: u64 },
    /// The log device holds dmirror metadata that cannot be used: both slots damaged, a leg's
    /// superblock, a newer format version...
    Unreadable(FormatError),
    /// The log records another sector size: read it again with that size (or it is another
    /// mirror's log).
    SectorSize { read: u32, recorded: u32 },
    /// The log belongs to a mirror of another shape (names what differs).
    Foreign {
        what: &'static str,
        recorded: u64,
        table: u64,
    },
    /// Leg `leg` is not the size the log records for it.
    WrongSize { leg: u8, recorded: u64, actual: u64 },
    /// No leg the log records as in sync (the log's data would all have to come from nowhere).
    NoUsableLeg,
    /// The device has no log but holds a dmirror leg's metadata at its end: it is a leg.
    IsALeg,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LogError::Table(what) => write!(f, "bad mirror table for a disk log: {what}"),
            LogError::TooSmall { needed, actual } => write!(
                f,
                "log device too small: {actual} sectors, this mirror's log needs {needed}"
            ),
            LogError::Unreadable(e) => {
                write!(
                    f,
                    "log device holds dmirror metadata that cannot be used: {e}"
                )
            }
            LogError::SectorSize { read, recorded } => write!(
                f,
                "log device records {recorded}-byte sectors, the mirror has {read}-byte sectors"
            ),
            LogError::Foreign {
                what,
                recorded,
                table,
            } => write!(
                f,
                "log device belongs to another mirror: it records {what} {recorded}, the table \
                 has {table}"
            ),
            LogError::WrongSize {
                leg,
                recorded,
                actual,
            } => write!(
                f,
                "leg {leg} is {actual} sectors, the log records {recorded}: not this mirror's \
                 leg, or resized"
            ),
            LogError::NoUsableLeg => {
                write!(
                    f,
                    "the log records no leg in sync: no leg holds a full copy"
                )
            }
            LogError::IsALeg => write!(
                f,
                "the device holds a dmirror leg's metadata at its end: it is a leg of a \
                 mirror, not a log device (refusing to overwrite it)"
            ),
        }
    }
}

/// One bitmap the host reads from the log device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBitmapRead {
    pub sector: u64,
    pub sectors: u64,
}

/// The outcome: the state the mirror starts in, and which bitmaps the host must read.
#[derive(Clone, Copy, Debug)]
pub struct LogAssembly {
    /// The log device was blank or unlabelled: a new mirror (the first round labels it).
    pub fresh: bool,
    /// The log recorded a clean shutdown.
    pub clean: bool,
    pub nlegs: u8,
    pub mirror_uuid: [u8; 16],
    pub name: [u8; 32],
    pub generation: u64,
    pub seq: u64,
    pub authoritative: u8,
    pub legs: [LegInit; MAX_LEGS],
    pub read_policy: crate::types::ReadPolicy,
    pub sector_size: u32,
    /// The log device's layout.
    pub layout: format::Layout,
    /// Read the write-intent bitmap (always, for a valid log: the bits a clean shutdown keeps
    /// are regions still to be resynced).
    pub dirty_needed: bool,
    /// Bit k: read leg k's tracking bitmap (it resyncs incrementally).
    pub tracking_needed: u32,
}

fn is_unlabelled(r: &Result<(), FormatError>) -> bool {
    matches!(r, Err(FormatError::Blank | FormatError::BadMagic))
}

/// Leg `k`'s uuid in a new mirror: the mirror's with the last byte changed (distinct per leg).
fn leg_uuid(mirror: &[u8; 16], k: u8) -> [u8; 16] {
    let mut u = *mirror;
    u[15] ^= 0x80 | k;
    u
}

/// Decide how the mirror starts from its disk log (see the module documentation).
pub fn assemble_log(log: &LogRead<'_>, table: &LogTable<'_>) -> Result<LogAssembly, LogError> {
    let mut scratch = Superblock::ZEROED;
    let mut out = LogAssembly::EMPTY;
    assemble_log_into(log, table, &mut scratch, &mut out)?;
    Ok(out)
}

/// [`assemble_log`] in memory the caller provides: `scratch` for the one superblock decoded at a
/// time, `out` for the answer (unspecified on error). For callers with little stack (a kernel
/// thread): no superblock or answer is moved through temporaries.
pub fn assemble_log_into(
    log: &LogRead<'_>,
    table: &LogTable<'_>,
    scratch: &mut Superblock,
    out: &mut LogAssembly,
) -> Result<(), LogError> {
    let n = table.leg_sectors.len();
    if n == 0 || n > MAX_LEGS {
        return Err(LogError::Table("number of legs (1 to 32)"));
    }
    let nlegs = n as u8;
    let layout = format::log_layout(table.sector_size, table.region_sectors, table.data_sectors)
        .map_err(|_| LogError::Table("geometry (sector size, region size, data size)"))?;
    let needed = format::log_device_sectors(
        table.sector_size,
        table.region_sectors,
        table.data_sectors,
        nlegs,
    )
    .map_err(|_| LogError::Table("geometry (sector size, region size, data size)"))?;
    if log.sector_size != table.sector_size {
        return Err(LogError::SectorSize {
            read: log.sector_size,
            recorded: table.sector_size,
        });
    }
    if log.sectors < needed {
        return Err(LogError::TooSmall {
            needed,
            actual: log.sectors,
        });
    }
    if let Some(k) = table
        .leg_sectors
        .iter()
        .position(|&s| s < table.data_sectors)
    {
        return Err(LogError::WrongSize {
            leg: k as u8,
            recorded: table.data_sectors,
            actual: table.leg_sectors.get(k).copied().unwrap_or(0),
        });
    }
    let unlabelled = is_unlabelled(&Superblock::decode_log_into(log.slot0, scratch))
        && is_unlabelled(&Superblock::decode_log_into(log.slot1, scratch));
    if unlabelled {
        if let Some((t0, t1)) = log.tail {
            if !is_unlabelled(&Superblock::decode_into(t0, scratch))
                || !is_unlabelled(&Superblock::decode_into(t1, scratch))
            {
                return Err(LogError::IsALeg);
            }
        }
        return fresh(table, nlegs, layout, out);
    }
    format::decode_newest_log_into(log.slot0, log.slot1, scratch).map_err(LogError::Unreadable)?;
    from_superblock(scratch, table, nlegs, layout, out)
}

fn fresh(
    table: &LogTable<'_>,
    nlegs: u8,
    layout: format::Layout,
    out: &mut LogAssembly,
) -> Result<(), LogError> {
    if table.uuid == [0; 16] {
        return Err(LogError::Table("mirror uuid (all zero)"));
    }
    *out = LogAssembly::EMPTY;
    for (k, (l, &sectors)) in out.legs.iter_mut().zip(table.leg_sectors).enumerate() {
        *l = LegInit {
            state: if k == 0 || table.sync == LogSync::Skip {
                LegState::InSync
            } else {
                LegState::Rebuilding
            },
            uuid: leg_uuid(&table.uuid, k as u8),
            sectors,
            rebuild: Rebuild {
                checkpoint: 0,
                full: true,
            },
            since: 0,
        };
    }
    out.fresh = true;
    out.clean = true;
    out.nlegs = nlegs;
    out.mirror_uuid = table.uuid;
    out.generation = 1;
    out.sector_size = table.sector_size;
    out.layout = layout;
    Ok(())
}

fn from_superblock(
    sb: &Superblock,
    table: &LogTable<'_>,
    nlegs: u8,
    layout: format::Layout,
    out: &mut LogAssembly,
) -> Result<(), LogError> {
    if sb.sector_size != table.sector_size {
        return Err(LogError::SectorSize {
            read: table.sector_size,
            recorded: sb.sector_size,
        });
    }
    let checks = [
        ("legs", u64::from(sb.nlegs), u64::from(nlegs)),
        ("data size (sectors)", sb.data_sectors, table.data_sectors),
        (
            "region size (sectors)",
            sb.region_sectors,
            table.region_sectors,
        ),
    ];
    for (what, recorded, t) in checks {
        if recorded != t {
            return Err(LogError::Foreign {
                what,
                recorded,
                table: t,
            });
        }
    }
    *out = LogAssembly::EMPTY;
    let mut tracking_needed = 0u32;
    for (k, (l, &actual)) in out.legs.iter_mut().zip(table.leg_sectors).enumerate() {
        let d = sb.legs.get(k).copied().unwrap_or(format::DiskLeg::EMPTY);
        if d.state != DiskLegState::Empty && d.sectors != actual {
            return Err(LogError::WrongSize {
                leg: k as u8,
                recorded: d.sectors,
                actual,
            });
        }
        let full = Rebuild {
            checkpoint: 0,
            full: true,
        };
        let (state, rebuild) = match d.state {
            DiskLegState::InSync => (LegState::InSync, full),
            DiskLegState::Rebuilding => (
                LegState::Rebuilding,
                Rebuild {
                    checkpoint: d.checkpoint,
                    full: d.full,
                },
            ),
            DiskLegState::Missing => (
                LegState::Rebuilding,
                Rebuild {
                    checkpoint: 0,
                    full: false,
                },
            ),
            // A failed leg, or a slot whose leg was removed and that the table fills again.
            DiskLegState::Failed | DiskLegState::Empty => (LegState::Rebuilding, full),
        };
        if state == LegState::Rebuilding && !rebuild.full {
            tracking_needed |= 1 << k;
        }
        let uuid = if d.uuid == [0; 16] {
            leg_uuid(&sb.mirror_uuid, k as u8)
        } else {
            d.uuid
        };
        *l = LegInit {
            state,
            uuid,
            sectors: actual,
            rebuild,
            since: d.since,
        };
    }
    let in_sync = |k: u8| out.legs.get(usize::from(k)).map(|l| l.state) == Some(LegState::InSync);
    let authoritative = if in_sync(sb.authoritative) {
        sb.authoritative
    } else {
        (0..nlegs)
            .find(|&k| in_sync(k))
            .ok_or(LogError::NoUsableLeg)?
    };
    if table.sync == LogSync::Force {
        for (k, l) in out.legs.iter_mut().enumerate().take(usize::from(nlegs)) {
            if k != usize::from(authoritative) {
                l.state = LegState::Rebuilding;
                l.rebuild = Rebuild {
                    checkpoint: 0,
                    full: true,
                };
            }
        }
        tracking_needed = 0;
    }
    out.fresh = false;
    out.clean = sb.clean;
    out.nlegs = nlegs;
    out.mirror_uuid = sb.mirror_uuid;
    out.name = sb.name;
    out.generation = sb.generation;
    out.seq = sb.seq;
    out.authoritative = authoritative;
    out.read_policy = sb.read_policy().unwrap_or_default();
    out.sector_size = sb.sector_size;
    out.layout = layout;
    out.dirty_needed = table.sync != LogSync::Force;
    out.tracking_needed = tracking_needed;
    Ok(())
}

impl LogAssembly {
    /// A starting value for [`assemble_log_into`]'s answer (not a valid answer).
    pub const EMPTY: LogAssembly = LogAssembly {
        fresh: false,
        clean: false,
        nlegs: 0,
        mirror_uuid: [0; 16],
        name: [0; 32],
        generation: 0,
        seq: 0,
        authoritative: 0,
        legs: [LegInit::EMPTY; MAX_LEGS],
        read_policy: crate::types::ReadPolicy::RoundRobin { batch: 8 },
        sector_size: 0,
        layout: format::Layout {
            slot_sectors: 0,
            slots: [0, 0],
            bitmap_start: 0,
            bitmap_sectors: 0,
            tracking_start: 0,
            meta_start: 0,
            regions: 0,
        },
        dirty_needed: false,
        tracking_needed: 0,
    };

    /// Regions of the mirror.
    pub fn regions(&self) -> u64 {
        self.layout.regions
    }

    /// Bytes of one bitmap on the log device.
    pub fn bitmap_bytes(&self) -> u64 {
        self.layout
            .bitmap_sectors
            .saturating_mul(u64::from(self.sector_size))
    }

    /// The write-intent bitmap, if the host must read it.
    pub fn dirty_read(&self) -> Option<LogBitmapRead> {
        self.dirty_needed.then_some(LogBitmapRead {
            sector: self.layout.bitmap_start,
            sectors: self.layout.bitmap_sectors,
        })
    }

    /// Leg `k`'s tracking bitmap, if the host must read it.
    pub fn tracking_read(&self, k: u8) -> Option<LogBitmapRead> {
        if k >= self.nlegs || self.tracking_needed & (1u32 << k) == 0 {
            return None;
        }
        Some(LogBitmapRead {
            sector: self.layout.tracking(k)?,
            sectors: self.layout.bitmap_sectors,
        })
    }

    /// The core's starting state. `dirty`: the bitmap [`LogAssembly::dirty_read`] listed;
    /// `tracking[k]`: the one [`LogAssembly::tracking_read`]`(k)` listed (others ignored). Every
    /// bitmap must have passed [`format::check_bitmap`].
    pub fn init<'b>(
        &self,
        dirty: Option<&'b [u8]>,
        tracking: [Option<&'b [u8]>; MAX_LEGS],
    ) -> Init<'b> {
        let mut t: [Option<&'b [u8]>; MAX_LEGS] = [None; MAX_LEGS];
        for (k, (dst, src)) in t.iter_mut().zip(tracking.iter()).enumerate() {
            if self.tracking_needed & (1u32 << k) != 0 {
                *dst = *src;
            }
        }
        Init {
            mirror_uuid: self.mirror_uuid,
            name: self.name,
            generation: self.generation,
            seq: self.seq,
            authoritative: self.authoritative,
            legs: self.legs,
            dirty: if self.dirty_needed { dirty } else { None },
            tracking: t,
        }
    }

    /// The configuration to create the mirror with (`LogKind::Device`; pools at their defaults).
    pub fn config(&self, data_sectors: u64, region_sectors: u64) -> crate::types::Config {
        let mut cfg = crate::types::Config::new(self.nlegs, data_sectors);
        cfg.sector_size = self.sector_size;
        cfg.region_sectors = region_sectors;
        cfg.read_policy = self.read_policy;
        cfg.log = crate::types::LogKind::Device;
        let region = u32::try_from(region_sectors).unwrap_or(u32::MAX);
        cfg.resync.chunk_sectors = cfg.resync.chunk_sectors.min(region);
        cfg
    }
}
