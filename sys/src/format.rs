//! The on-disk format of a dmirror leg (version 1), documented field by field in `docs/FORMAT.md`.
//!
//! Every leg carries its metadata at its **end**, so data starts at sector 0 and one leg is
//! readable on its own. Going down from the end of the leg:
//!
//! ```text
//! 0 ........ data_sectors ... meta_start=bitmap_start  tracking_start        slots[0]  slots[1]  end
//! |  data (mirrored)   | free | write-intent bitmap | 32 tracking bitmaps | slot 0  | slot 1  |tail|
//! ```
//!
//! The two superblock slots are written alternately (`slot = seq & 1`), each with a CRC32C, so a
//! torn superblock write always leaves the other slot, the previous state, readable.
//!
//! Everything here is pure: decoding never panics, whatever the bytes, and every rejection is a
//! specific [`FormatError`].
use core::fmt;

use static_assertions::const_assert;

use crate::types::{LegState, ReadPolicy, MAX_LEGS};

/// First 8 bytes of every superblock.
pub const MAGIC: [u8; 8] = *b"DMIRROR\x01";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of an encoded superblock. A slot is `max(SB_BYTES, sector_size)` bytes; the bytes of a
/// slot past `SB_BYTES` are written as zeros and ignored on read.
pub const SB_BYTES: usize = 4096;
/// Tracking bitmaps every leg reserves room for (one per possible leg).
pub const TRACKING_BITMAPS: u64 = MAX_LEGS as u64;
/// Most regions a mirror may have (a 512 MiB bitmap). The default region size keeps a mirror at
/// 1,048,576 regions or fewer; this only bounds what a label may ask for and what a damaged (but
/// checksummed) superblock can make a host allocate.
pub const MAX_REGIONS: u64 = 1 << 32;

// Field offsets in the encoded superblock (all integers little-endian).
pub const OFF_MAGIC: usize = 0; // [u8; 8]
pub const OFF_VERSION: usize = 8; // u32
pub const OFF_CRC: usize = 12; // u32, CRC32C of the SB_BYTES block with this field zeroed
pub const OFF_SEQ: usize = 16; // u64
pub const OFF_GENERATION: usize = 24; // u64
pub const OFF_MIRROR_UUID: usize = 32; // [u8; 16]
pub const OFF_LEG_INDEX: usize = 48; // u8
pub const OFF_NLEGS: usize = 49; // u8
pub const OFF_AUTHORITATIVE: usize = 50; // u8
pub const OFF_CLEAN: usize = 51; // u8, 0 or 1
pub const OFF_SECTOR_SIZE: usize = 52; // u32
pub const OFF_REGION_SECTORS: usize = 56; // u64
pub const OFF_DATA_SECTORS: usize = 64; // u64
pub const OFF_BITMAP_START: usize = 72; // u64
pub const OFF_BITMAP_SECTORS: usize = 80; // u64
pub const OFF_TRACKING_START: usize = 88; // u64
pub const OFF_READ_POLICY: usize = 96; // u8
pub const OFF_RESERVED1: usize = 97; // [u8; 3], zero
pub const OFF_READ_POLICY_ARG: usize = 100; // u32
pub const OFF_NAME: usize = 104; // [u8; 32], NUL padded
pub const OFF_RESERVED2: usize = 136; // [u8; 120], zero
pub const OFF_LEGS: usize = 256; // [leg entry; 32]
/// Size of one leg table entry.
pub const LEG_ENTRY_BYTES: usize = 40;
// Offsets inside a leg entry.
pub const LEG_OFF_UUID: usize = 0; // [u8; 16]
pub const LEG_OFF_STATE: usize = 16; // u8 (DiskLegState)
pub const LEG_OFF_FULL: usize = 17; // u8, 0 or 1
pub const LEG_OFF_SINCE: usize = 18; // u48: generation at which this entry's state last changed
pub const LEG_OFF_CHECKPOINT: usize = 24; // u64
pub const LEG_OFF_SECTORS: usize = 32; // u64
/// First byte after the leg table; everything from here to `SB_BYTES` is zero.
pub const OFF_TAIL: usize = OFF_LEGS + MAX_LEGS * LEG_ENTRY_BYTES;

const_assert!(OFF_VERSION == OFF_MAGIC + 8);
const_assert!(OFF_CRC == OFF_VERSION + 4);
const_assert!(OFF_SEQ == OFF_CRC + 4);
const_assert!(OFF_GENERATION == OFF_SEQ + 8);
const_assert!(OFF_MIRROR_UUID == OFF_GENERATION + 8);
const_assert!(OFF_LEG_INDEX == OFF_MIRROR_UUID + 16);
const_assert!(OFF_NLEGS == OFF_LEG_INDEX + 1);
const_assert!(OFF_AUTHORITATIVE == OFF_NLEGS + 1);
const_assert!(OFF_CLEAN == OFF_AUTHORITATIVE + 1);
const_assert!(OFF_SECTOR_SIZE == OFF_CLEAN + 1);
const_assert!(OFF_SECTOR_SIZE & 3 == 0);
const_assert!(OFF_REGION_SECTORS == OFF_SECTOR_SIZE + 4);
const_assert!(OFF_DATA_SECTORS == OFF_REGION_SECTORS + 8);
const_assert!(OFF_BITMAP_START == OFF_DATA_SECTORS + 8);
const_assert!(OFF_BITMAP_SECTORS == OFF_BITMAP_START + 8);
const_assert!(OFF_TRACKING_START == OFF_BITMAP_SECTORS + 8);
const_assert!(OFF_READ_POLICY == OFF_TRACKING_START + 8);
const_assert!(OFF_RESERVED1 == OFF_READ_POLICY + 1);
const_assert!(OFF_READ_POLICY_ARG == OFF_RESERVED1 + 3);
const_assert!(OFF_NAME == OFF_READ_POLICY_ARG + 4);
const_assert!(OFF_RESERVED2 == OFF_NAME + 32);
const_assert!(OFF_LEGS > OFF_RESERVED2);
const_assert!(OFF_LEGS & 7 == 0);
const_assert!(LEG_OFF_STATE == LEG_OFF_UUID + 16);
const_assert!(LEG_OFF_FULL == LEG_OFF_STATE + 1);
const_assert!(LEG_OFF_SINCE == LEG_OFF_FULL + 1);
const_assert!(LEG_OFF_CHECKPOINT == LEG_OFF_SINCE + 6);
const_assert!(LEG_OFF_SECTORS == LEG_OFF_CHECKPOINT + 8);
const_assert!(LEG_ENTRY_BYTES == LEG_OFF_SECTORS + 8);
const_assert!(OFF_TAIL == 1536);
const_assert!(OFF_TAIL <= SB_BYTES);
const_assert!(SB_BYTES & 511 == 0);
const_assert!(MAX_LEGS <= 255);

/// Why metadata was rejected (or could not be laid out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The buffer is shorter than a superblock (`SB_BYTES`).
    Truncated,
    /// The slot is all zeros: no superblock was ever written there.
    Blank,
    /// The first 8 bytes are not `MAGIC`: not a dmirror superblock.
    BadMagic,
    /// A superblock of a format version this build does not read (carries the version found).
    UnsupportedVersion(u32),
    /// The CRC32C does not match: a torn or damaged write.
    BadChecksum,
    /// A field is out of range or inconsistent with the others (names the field).
    BadField(&'static str),
    /// The superblock's sequence number does not belong in the slot it was read from
    /// (slot 0 holds even sequence numbers, slot 1 odd ones).
    WrongSlot { seq: u64, slot: u8 },
    /// The leg cannot hold the data plus the metadata area.
    LegTooSmall { needed: u64, actual: u64 },
    /// The region size gives more regions than `MAX_REGIONS`.
    TooManyRegions { regions: u64 },
    /// A bitmap buffer is shorter than the regions it must describe.
    BitmapTooShort { needed: u64, actual: u64 },
    /// A bitmap has a bit set for a region past the last one.
    BitmapBitsPastEnd { region: u64 },
    /// The superblock is a disk log device's (`leg_index == LOG_DEVICE_INDEX`), not a leg's: the
    /// device is the separate log of a dm mirror (docs/FORMAT.md, section 9).
    LogDevice,
    /// A log device was expected but the superblock is a leg's (a self-describing dmirror leg).
    NotLogDevice,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FormatError::Truncated => {
                write!(f, "superblock buffer is shorter than {SB_BYTES} bytes")
            }
            FormatError::Blank => write!(f, "no superblock (the slot is all zeros)"),
            FormatError::BadMagic => write!(f, "not a dmirror superblock (bad magic)"),
            FormatError::UnsupportedVersion(v) if v > FORMAT_VERSION => write!(
                f,
                "superblock format version {v} is newer than this dmirror supports \
                 (version {FORMAT_VERSION}); use a newer dmirror"
            ),
            FormatError::UnsupportedVersion(v) => {
                write!(f, "superblock format version {v} is not a valid version")
            }
            FormatError::BadChecksum => {
                write!(f, "superblock checksum mismatch (torn or damaged write)")
            }
            FormatError::BadField(name) => {
                write!(
                    f,
                    "superblock field `{name}` is out of range or inconsistent"
                )
            }
            FormatError::WrongSlot { seq, slot } => write!(
                f,
                "superblock with sequence number {seq} found in slot {slot}, where it cannot \
                 have been written"
            ),
            FormatError::LegTooSmall { needed, actual } => write!(
                f,
                "leg is too small: {actual} sectors, the data plus metadata need {needed}"
            ),
            FormatError::TooManyRegions { regions } => write!(
                f,
                "region size too small: {regions} regions, at most {MAX_REGIONS} are allowed"
            ),
            FormatError::BitmapTooShort { needed, actual } => {
                write!(f, "bitmap is {actual} bytes, {needed} are needed")
            }
            FormatError::BitmapBitsPastEnd { region } => write!(
                f,
                "bitmap has a bit set for region {region}, past the last region"
            ),
            FormatError::LogDevice => write!(
                f,
                "this is the disk log device of a dm mirror (dm_target_mirror), not a leg: \
                 its legs carry no dmirror metadata"
            ),
            FormatError::NotLogDevice => write!(
                f,
                "this holds a dmirror leg's superblock, not a disk log device's: refusing to \
                 use a leg as a log"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CRC32C (Castagnoli), slicing-by-8 over const-built tables.

const CRC32C_POLY: u32 = 0x82F6_3B78; // reflected 0x1EDC6F41

#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut j = 1;
    while j < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[j - 1][i];
            t[j][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        j += 1;
    }
    t
}

static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

/// Entry `index & 0xff` of table `T` (< 8).
#[inline(always)]
#[allow(clippy::indexing_slicing)] // T < 8 (const) and the index is masked to 0..=255
fn tab<const T: usize>(index: u32) -> u32 {
    CRC_TABLES[T][(index & 0xff) as usize]
}

/// CRC32C (Castagnoli) of `bytes`, continuing from `crc` (0 to start):
/// `crc32c(crc32c(0, a), b) == crc32c(0, a ++ b)`.
pub fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    let mut chunks = bytes.chunks_exact(8);
    for ch in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(ch);
        let lo = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ c;
        let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        c = tab::<7>(lo)
            ^ tab::<6>(lo >> 8)
            ^ tab::<5>(lo >> 16)
            ^ tab::<4>(lo >> 24)
            ^ tab::<3>(hi)
            ^ tab::<2>(hi >> 8)
            ^ tab::<1>(hi >> 16)
            ^ tab::<0>(hi >> 24);
    }
    for &b in chunks.remainder() {
        c = tab::<0>(c ^ u32::from(b)) ^ (c >> 8);
    }
    !c
}

// ---------------------------------------------------------------------------------------------
// Geometry.

/// Default region size in sectors for a mirror of `data_sectors` sectors of `sector_size` bytes:
/// 1024 sectors (512 KiB with 512-byte sectors), doubled until the bitmap fits in 128 KiB (at most
/// 1,048,576 regions). Always a power of two, at least 1024.
pub fn default_region_sectors(data_sectors: u64, sector_size: u32) -> u64 {
    let _ = sector_size; // the rule counts sectors, whatever their size
    const MAX_DEFAULT_REGIONS: u64 = 128 * 1024 * 8;
    let mut region: u64 = 1024;
    while data_sectors.div_ceil(region) > MAX_DEFAULT_REGIONS {
        match region.checked_mul(2) {
            Some(r) => region = r,
            None => break, // unreachable: 2^63-sector regions already give 2 regions
        }
    }
    region
}

/// Whether `sector_size` is one a mirror may have: a power of two, 512..=65536.
pub fn valid_sector_size(sector_size: u32) -> bool {
    sector_size.is_power_of_two() && (512..=65536).contains(&sector_size)
}

/// Sectors one superblock slot takes: `max(SB_BYTES, sector_size) / sector_size`
/// (0 for an invalid sector size).
pub fn slot_sectors(sector_size: u32) -> u64 {
    if !valid_sector_size(sector_size) {
        return 0;
    }
    (SB_BYTES as u64).max(u64::from(sector_size)) / u64::from(sector_size)
}

/// Absolute sectors of superblock slot 0 and slot 1 on a leg of `leg_sectors` sectors of
/// `sector_size` bytes. They depend only on these two numbers, so a host can find them before
/// knowing anything else: slot 1 is the last whole slot-sized, slot-aligned block of the leg
/// (aligned to 4 KiB, or to the sector when sectors are larger), slot 0 the block just before it.
/// For a leg too small to hold two slots (or an invalid sector size) the answer is `[0, 0]`.
pub fn slot_positions(leg_sectors: u64, sector_size: u32) -> [u64; 2] {
    let s = slot_sectors(sector_size);
    if s == 0 || leg_sectors < s.saturating_mul(2) {
        return [0, 0];
    }
    let slot1 = (leg_sectors - s) / s * s;
    if slot1 < s {
        return [0, 0];
    }
    [slot1 - s, slot1]
}

/// Where everything sits on one leg. All positions are absolute sectors on that leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Sectors of one superblock slot.
    pub slot_sectors: u64,
    /// First sector of slot 0 and slot 1.
    pub slots: [u64; 2],
    /// The write-intent bitmap.
    pub bitmap_start: u64,
    /// Sectors of one bitmap (write-intent or tracking).
    pub bitmap_sectors: u64,
    /// Tracking bitmap of leg `k` at `tracking_start + k * bitmap_sectors`, k < 32.
    pub tracking_start: u64,
    /// First metadata sector; the data must end at or before it.
    pub meta_start: u64,
    /// Regions of the data: `ceil(data_sectors / region_sectors)`.
    pub regions: u64,
}

impl Layout {
    /// First sector of the tracking bitmap of leg `k` (None for k >= 32).
    pub fn tracking(&self, k: u8) -> Option<u64> {
        if u64::from(k) >= TRACKING_BITMAPS {
            return None;
        }
        self.tracking_start
            .checked_add(u64::from(k).checked_mul(self.bitmap_sectors)?)
    }
}

fn check_geometry(
    sector_size: u32,
    region_sectors: u64,
    data_sectors: u64,
) -> Result<u64, FormatError> {
    if !valid_sector_size(sector_size) {
        return Err(FormatError::BadField("sector_size"));
    }
    if !region_sectors.is_power_of_two() {
        return Err(FormatError::BadField("region_sectors"));
    }
    if data_sectors == 0 {
        return Err(FormatError::BadField("data_sectors"));
    }
    let regions = data_sectors.div_ceil(region_sectors);
    if regions > MAX_REGIONS {
        return Err(FormatError::TooManyRegions { regions });
    }
    Ok(regions)
}

/// Sectors of one bitmap for `regions` regions: `ceil(ceil(regions / 8) / sector_size)`.
pub fn bitmap_sectors(regions: u64, sector_size: u32) -> u64 {
    regions.div_ceil(8).div_ceil(u64::from(sector_size.max(1)))
}

/// Smallest leg that holds `data_sectors` plus metadata of `bitmap_sectors`-sector bitmaps and
/// `slot` -sector slots (u64::MAX when it overflows).
fn leg_needed(data_sectors: u64, bms: u64, slot: u64) -> u64 {
    (|| {
        let meta = bms.checked_mul(TRACKING_BITMAPS + 1)?;
        let slot1 = data_sectors.checked_add(meta)?.checked_add(slot)?;
        let slot1 = slot1.div_ceil(slot).checked_mul(slot)?;
        slot1.checked_add(slot)
    })()
    .unwrap_or(u64::MAX)
}

/// The layout of a leg of `leg_sectors` sectors holding `data_sectors` of data. Errors name the
/// bad parameter, or say how big the leg would have to be.
pub fn layout(
    leg_sectors: u64,
    sector_size: u32,
    region_sectors: u64,
    data_sectors: u64,
) -> Result<Layout, FormatError> {
    let regions = check_geometry(sector_size, region_sectors, data_sectors)?;
    let slot = slot_sectors(sector_size);
    let bms = bitmap_sectors(regions, sector_size);
    let too_small = FormatError::LegTooSmall {
        needed: leg_needed(data_sectors, bms, slot),
        actual: leg_sectors,
    };
    let slots = slot_positions(leg_sectors, sector_size);
    if slots == [0, 0] {
        return Err(too_small);
    }
    let tracking_start = bms
        .checked_mul(TRACKING_BITMAPS)
        .and_then(|t| slots[0].checked_sub(t))
        .ok_or(too_small)?;
    let bitmap_start = tracking_start.checked_sub(bms).ok_or(too_small)?;
    if data_sectors > bitmap_start {
        return Err(too_small);
    }
    Ok(Layout {
        slot_sectors: slot,
        slots,
        bitmap_start,
        bitmap_sectors: bms,
        tracking_start,
        meta_start: bitmap_start,
        regions,
    })
}

/// The largest data size (sectors) whose layout fits a leg of `leg_sectors`; 0 if none does.
pub fn max_data_sectors(leg_sectors: u64, sector_size: u32, region_sectors: u64) -> u64 {
    let fits = |d: u64| layout(leg_sectors, sector_size, region_sectors, d).is_ok();
    if !fits(1) {
        return 0;
    }
    // fits() is monotone: more data never needs less metadata.
    let (mut lo, mut hi) = (1u64, leg_sectors);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Checks a bitmap of `regions` regions (bit `r` is bit `r % 8`, LSB first, of byte `r / 8`):
/// it is long enough and no bit past the last region is set (anywhere in `bytes`).
pub fn check_bitmap(bytes: &[u8], regions: u64) -> Result<(), FormatError> {
    let needed = regions.div_ceil(8);
    let actual = bytes.len() as u64;
    if actual < needed {
        return Err(FormatError::BitmapTooShort { needed, actual });
    }
    let full = (regions / 8) as usize; // < bytes.len() + 1, checked above
    let tail = bytes.get(full..).unwrap_or(&[]);
    for (i, &b) in tail.iter().enumerate() {
        let allowed: u8 = if i == 0 {
            ((1u16 << (regions % 8)) - 1) as u8
        } else {
            0
        };
        let stray = b & !allowed;
        if stray != 0 {
            let byte = (full as u64).saturating_add(i as u64);
            return Err(FormatError::BitmapBitsPastEnd {
                region: byte
                    .saturating_mul(8)
                    .saturating_add(u64::from(stray.trailing_zeros())),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The superblock.

/// A leg's state as stored on disk.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskLegState {
    #[default]
    Empty = 0,
    InSync = 1,
    Rebuilding = 2,
    Failed = 3,
    Missing = 4,
}

impl TryFrom<u8> for DiskLegState {
    type Error = FormatError;
    fn try_from(v: u8) -> Result<Self, FormatError> {
        Ok(match v {
            0 => DiskLegState::Empty,
            1 => DiskLegState::InSync,
            2 => DiskLegState::Rebuilding,
            3 => DiskLegState::Failed,
            4 => DiskLegState::Missing,
            _ => return Err(FormatError::BadField("leg state")),
        })
    }
}

impl From<DiskLegState> for LegState {
    fn from(s: DiskLegState) -> LegState {
        match s {
            DiskLegState::Empty => LegState::Empty,
            DiskLegState::InSync => LegState::InSync,
            DiskLegState::Rebuilding => LegState::Rebuilding,
            DiskLegState::Failed => LegState::Failed,
            DiskLegState::Missing => LegState::Missing,
        }
    }
}

impl From<LegState> for DiskLegState {
    fn from(s: LegState) -> DiskLegState {
        match s {
            LegState::Empty => DiskLegState::Empty,
            LegState::InSync => DiskLegState::InSync,
            LegState::Rebuilding => DiskLegState::Rebuilding,
            LegState::Failed => DiskLegState::Failed,
            LegState::Missing => DiskLegState::Missing,
        }
    }
}

/// One entry of the leg table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLeg {
    pub uuid: [u8; 16],
    pub state: DiskLegState,
    /// For a rebuilding leg: the rebuild copies every region (otherwise only the tracked ones).
    pub full: bool,
    /// For a rebuilding leg: regions below this index are already copied.
    pub checkpoint: u64,
    /// That leg's device size in sectors.
    pub sectors: u64,
    /// The generation at which this entry's state last changed (at most 2^48 - 1). For a leg
    /// recorded as failed, missing or removed: when it left. Assembly compares it with that
    /// leg's own newest generation to tell a stale leg from a split brain.
    pub since: u64,
}

/// Largest `DiskLeg::since` (it is stored in 48 bits).
pub const SINCE_MAX: u64 = (1 << 48) - 1;

impl DiskLeg {
    /// An empty slot (all zeros on disk).
    pub const EMPTY: DiskLeg = DiskLeg {
        uuid: [0; 16],
        state: DiskLegState::Empty,
        full: false,
        checkpoint: 0,
        sectors: 0,
        since: 0,
    };
}

impl Default for DiskLeg {
    fn default() -> Self {
        DiskLeg::EMPTY
    }
}

/// Read policy codes stored in `Superblock::read_policy`.
pub const READ_ROUND_ROBIN: u8 = 0;
pub const READ_LOAD: u8 = 1;
pub const READ_PREFER: u8 = 2;
pub const READ_SPLIT: u8 = 3;

/// The on-disk code and argument of a read policy.
pub fn encode_read_policy(p: ReadPolicy) -> (u8, u32) {
    match p {
        ReadPolicy::RoundRobin { batch } => (READ_ROUND_ROBIN, batch),
        ReadPolicy::Load => (READ_LOAD, 0),
        ReadPolicy::Prefer { leg } => (READ_PREFER, u32::from(leg)),
        ReadPolicy::Split { min_sectors } => (READ_SPLIT, min_sectors),
    }
}

/// One leg's superblock: the mirror's state as this leg last heard it, plus where this leg keeps
/// its bitmaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// +1 on every superblock write to this leg; written to slot `seq & 1`.
    pub seq: u64,
    /// +1 on every leg state change.
    pub generation: u64,
    pub mirror_uuid: [u8; 16],
    /// This leg's slot in the leg table.
    pub leg_index: u8,
    /// Leg slots in use, 1..=32.
    pub nlegs: u8,
    /// The leg that is the source of truth for regions that may differ.
    pub authoritative: u8,
    /// Written by a clean shutdown: no region is dirty.
    pub clean: bool,
    pub sector_size: u32,
    pub region_sectors: u64,
    pub data_sectors: u64,
    /// This leg's write-intent bitmap (sector, and sectors of one bitmap).
    pub bitmap_start: u64,
    pub bitmap_sectors: u64,
    /// Tracking bitmap of leg k at `tracking_start + k * bitmap_sectors`.
    pub tracking_start: u64,
    /// `READ_*` code and its argument.
    pub read_policy: u8,
    pub read_policy_arg: u32,
    /// NUL padded.
    pub name: [u8; 32],
    pub legs: [DiskLeg; MAX_LEGS],
}

struct Reader<'b>(&'b [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> Result<[u8; N], FormatError> {
        let end = off.checked_add(N).ok_or(FormatError::Truncated)?;
        let mut out = [0u8; N];
        out.copy_from_slice(self.0.get(off..end).ok_or(FormatError::Truncated)?);
        Ok(out)
    }
    fn u8(&self, off: usize) -> Result<u8, FormatError> {
        self.0.get(off).copied().ok_or(FormatError::Truncated)
    }
    fn u32(&self, off: usize) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.bytes(off)?))
    }
    fn u64(&self, off: usize) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.bytes(off)?))
    }
    fn bool(&self, off: usize, field: &'static str) -> Result<bool, FormatError> {
        match self.u8(off)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FormatError::BadField(field)),
        }
    }
    fn zero(&self, from: usize, to: usize) -> Result<bool, FormatError> {
        Ok(self
            .0
            .get(from..to)
            .ok_or(FormatError::Truncated)?
            .iter()
            .all(|&b| b == 0))
    }
}

struct Writer<'b>(&'b mut [u8]);

impl Writer<'_> {
    fn put(&mut self, off: usize, bytes: &[u8]) -> Result<(), FormatError> {
        let end = off.checked_add(bytes.len()).ok_or(FormatError::Truncated)?;
        self.0
            .get_mut(off..end)
            .ok_or(FormatError::Truncated)?
            .copy_from_slice(bytes);
        Ok(())
    }
}

fn nul_padded(name: &[u8; 32]) -> bool {
    match name.iter().position(|&b| b == 0) {
        Some(p) => name.get(p..).unwrap_or(&[]).iter().all(|&b| b == 0),
        None => true,
    }
}

impl Superblock {
    /// The superblock of leg `leg_index` of a freshly labelled mirror: seq 0, generation 1, clean,
    /// leg table `legs` (one entry per slot, `legs.len()` slots), bitmap positions from that leg's
    /// recorded size, default read policy.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mirror_uuid: [u8; 16],
        name: [u8; 32],
        sector_size: u32,
        region_sectors: u64,
        data_sectors: u64,
        legs: &[DiskLeg],
        leg_index: u8,
        authoritative: u8,
    ) -> Result<Superblock, FormatError> {
        if legs.is_empty() || legs.len() > MAX_LEGS {
            return Err(FormatError::BadField("nlegs"));
        }
        let (read_policy, read_policy_arg) = encode_read_policy(ReadPolicy::default());
        let mut table = [DiskLeg::EMPTY; MAX_LEGS];
        for (slot, leg) in table.iter_mut().zip(legs) {
            *slot = *leg;
        }
        let sb = Superblock {
            seq: 0,
            generation: 1,
            mirror_uuid,
            leg_index,
            nlegs: legs.len() as u8,
            authoritative,
            clean: true,
            sector_size,
            region_sectors,
            data_sectors,
            bitmap_start: 0,
            bitmap_sectors: 0,
            tracking_start: 0,
            read_policy,
            read_policy_arg,
            name,
            legs: table,
        };
        sb.for_leg(leg_index)
    }

    /// The same mirror state as it is written to leg `leg_index`: `leg_index` and the bitmap
    /// positions (from that leg's recorded size) change, nothing else. Validated.
    pub fn for_leg(&self, leg_index: u8) -> Result<Superblock, FormatError> {
        let mut sb = *self;
        sb.leg_index = leg_index;
        let leg = self
            .legs
            .get(usize::from(leg_index))
            .filter(|_| leg_index < self.nlegs)
            .ok_or(FormatError::BadField("leg_index"))?;
        let l = layout(
            leg.sectors,
            self.sector_size,
            self.region_sectors,
            self.data_sectors,
        )?;
        sb.bitmap_start = l.bitmap_start;
        sb.bitmap_sectors = l.bitmap_sectors;
        sb.tracking_start = l.tracking_start;
        sb.validate()?;
        Ok(sb)
    }

    /// This leg's UUID (its entry in the leg table).
    pub fn leg_uuid(&self) -> [u8; 16] {
        self.legs
            .get(usize::from(self.leg_index))
            .map_or([0; 16], |l| l.uuid)
    }

    /// This leg's entry in the leg table.
    pub fn own(&self) -> DiskLeg {
        self.legs
            .get(usize::from(self.leg_index))
            .copied()
            .unwrap_or(DiskLeg::EMPTY)
    }

    /// Regions of the data.
    pub fn regions(&self) -> u64 {
        self.data_sectors.div_ceil(self.region_sectors.max(1))
    }

    /// This leg's layout (from its recorded size).
    pub fn layout(&self) -> Result<Layout, FormatError> {
        layout(
            self.own().sectors,
            self.sector_size,
            self.region_sectors,
            self.data_sectors,
        )
    }

    /// The read policy (None if the stored code is invalid).
    pub fn read_policy(&self) -> Option<ReadPolicy> {
        let arg = self.read_policy_arg;
        match self.read_policy {
            READ_ROUND_ROBIN if arg >= 1 => Some(ReadPolicy::RoundRobin { batch: arg }),
            READ_LOAD if arg == 0 => Some(ReadPolicy::Load),
            READ_PREFER if arg < u32::from(self.nlegs) => {
                Some(ReadPolicy::Prefer { leg: arg as u8 })
            }
            READ_SPLIT if arg >= 1 => Some(ReadPolicy::Split { min_sectors: arg }),
            _ => None,
        }
    }

    /// Index of the leg whose UUID is `uuid` in the leg table (None for the zero UUID).
    pub fn find_leg(&self, uuid: &[u8; 16]) -> Option<u8> {
        if *uuid == [0; 16] {
            return None;
        }
        self.legs
            .iter()
            .take(usize::from(self.nlegs))
            .position(|l| l.uuid == *uuid && l.state != DiskLegState::Empty)
            .map(|i| i as u8)
    }

    /// Every rule `decode` enforces after the checksum; `encode` refuses what it would reject.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.mirror_uuid == [0; 16] {
            return Err(FormatError::BadField("mirror_uuid"));
        }
        if self.nlegs == 0 || usize::from(self.nlegs) > MAX_LEGS {
            return Err(FormatError::BadField("nlegs"));
        }
        let is_log = self.leg_index == LOG_DEVICE_INDEX;
        if self.leg_index >= self.nlegs && !is_log {
            return Err(FormatError::BadField("leg_index"));
        }
        if self.authoritative >= self.nlegs {
            return Err(FormatError::BadField("authoritative"));
        }
        let regions = check_geometry(self.sector_size, self.region_sectors, self.data_sectors)?;
        for (k, leg) in self.legs.iter().enumerate() {
            if k >= usize::from(self.nlegs) {
                if *leg != DiskLeg::EMPTY {
                    return Err(FormatError::BadField("leg table (empty slot not zeroed)"));
                }
                continue;
            }
            if leg.state == DiskLegState::Empty {
                // A removed leg's slot keeps its UUID and when it left (assembly uses them to
                // recognise that leg as removed rather than as the other side of a split brain).
                let retired = DiskLeg {
                    uuid: leg.uuid,
                    since: leg.since,
                    ..DiskLeg::EMPTY
                };
                if *leg != retired {
                    return Err(FormatError::BadField("leg table (empty slot not zeroed)"));
                }
                if leg.since > self.generation {
                    return Err(FormatError::BadField(
                        "leg since (after the superblock's generation)",
                    ));
                }
                continue;
            }
            if leg.uuid == [0; 16] {
                return Err(FormatError::BadField("leg uuid"));
            }
            if self
                .legs
                .iter()
                .take(k)
                .any(|o| o.uuid == leg.uuid && o.state != DiskLegState::Empty)
            {
                return Err(FormatError::BadField("leg uuid (duplicate)"));
            }
            if leg.state != DiskLegState::Rebuilding && (leg.full || leg.checkpoint != 0) {
                return Err(FormatError::BadField(
                    "leg rebuild (set on a leg not rebuilding)",
                ));
            }
            if leg.checkpoint > regions {
                return Err(FormatError::BadField("leg checkpoint"));
            }
            if leg.since > self.generation || leg.since > SINCE_MAX {
                return Err(FormatError::BadField(
                    "leg since (after the superblock's generation)",
                ));
            }
            if is_log {
                // Legs of a disk-log mirror carry only data.
                if leg.sectors < self.data_sectors {
                    return Err(FormatError::BadField("leg sectors"));
                }
                continue;
            }
            match layout(
                leg.sectors,
                self.sector_size,
                self.region_sectors,
                self.data_sectors,
            ) {
                Ok(_) => {}
                Err(FormatError::LegTooSmall { .. }) => {
                    return Err(FormatError::BadField("leg sectors"))
                }
                Err(e) => return Err(e),
            }
        }
        if !is_log && self.own().state == DiskLegState::Empty {
            return Err(FormatError::BadField("leg_index (own slot is empty)"));
        }
        let l = if is_log {
            log_layout(self.sector_size, self.region_sectors, self.data_sectors)?
        } else {
            self.layout()?
        };
        if self.bitmap_start != l.bitmap_start {
            return Err(FormatError::BadField("bitmap_start"));
        }
        if self.bitmap_sectors != l.bitmap_sectors {
            return Err(FormatError::BadField("bitmap_sectors"));
        }
        if self.tracking_start != l.tracking_start {
            return Err(FormatError::BadField("tracking_start"));
        }
        if self.read_policy().is_none() {
            return Err(FormatError::BadField("read_policy"));
        }
        if !nul_padded(&self.name) {
            return Err(FormatError::BadField("name (not NUL padded)"));
        }
        Ok(())
    }

    /// Writes the superblock into `out[..SB_BYTES]` (little-endian, fixed offsets, CRC32C over the
    /// block with the CRC field zeroed, unused bytes zero). Refuses a superblock `decode` would
    /// reject, and an `out` shorter than `SB_BYTES`; `out` past `SB_BYTES` is left alone.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), FormatError> {
        self.validate()?;
        let block = out.get_mut(..SB_BYTES).ok_or(FormatError::Truncated)?;
        block.fill(0);
        let mut w = Writer(block);
        w.put(OFF_MAGIC, &MAGIC)?;
        w.put(OFF_VERSION, &FORMAT_VERSION.to_le_bytes())?;
        w.put(OFF_SEQ, &self.seq.to_le_bytes())?;
        w.put(OFF_GENERATION, &self.generation.to_le_bytes())?;
        w.put(OFF_MIRROR_UUID, &self.mirror_uuid)?;
        w.put(
            OFF_LEG_INDEX,
            &[
                self.leg_index,
                self.nlegs,
                self.authoritative,
                u8::from(self.clean),
            ],
        )?;
        w.put(OFF_SECTOR_SIZE, &self.sector_size.to_le_bytes())?;
        w.put(OFF_REGION_SECTORS, &self.region_sectors.to_le_bytes())?;
        w.put(OFF_DATA_SECTORS, &self.data_sectors.to_le_bytes())?;
        w.put(OFF_BITMAP_START, &self.bitmap_start.to_le_bytes())?;
        w.put(OFF_BITMAP_SECTORS, &self.bitmap_sectors.to_le_bytes())?;
        w.put(OFF_TRACKING_START, &self.tracking_start.to_le_bytes())?;
        w.put(OFF_READ_POLICY, &[self.read_policy])?;
        w.put(OFF_READ_POLICY_ARG, &self.read_policy_arg.to_le_bytes())?;
        w.put(OFF_NAME, &self.name)?;
        for (k, leg) in self.legs.iter().enumerate() {
            let base = OFF_LEGS + k * LEG_ENTRY_BYTES;
            w.put(base + LEG_OFF_UUID, &leg.uuid)?;
            w.put(base + LEG_OFF_STATE, &[leg.state as u8, u8::from(leg.full)])?;
            w.put(
                base + LEG_OFF_SINCE,
                leg.since.to_le_bytes().get(..6).unwrap_or(&[]),
            )?;
            w.put(base + LEG_OFF_CHECKPOINT, &leg.checkpoint.to_le_bytes())?;
            w.put(base + LEG_OFF_SECTORS, &leg.sectors.to_le_bytes())?;
        }
        let crc = crc32c(0, w.0);
        w.put(OFF_CRC, &crc.to_le_bytes())?;
        Ok(())
    }

    /// A zeroed superblock (not a valid one): the starting value of memory given to
    /// [`Superblock::decode_into`].
    pub const ZEROED: Superblock = Superblock {
        seq: 0,
        generation: 0,
        mirror_uuid: [0; 16],
        leg_index: 0,
        nlegs: 0,
        authoritative: 0,
        clean: false,
        sector_size: 0,
        region_sectors: 0,
        data_sectors: 0,
        bitmap_start: 0,
        bitmap_sectors: 0,
        tracking_start: 0,
        read_policy: 0,
        read_policy_arg: 0,
        name: [0; 32],
        legs: [DiskLeg::EMPTY; MAX_LEGS],
    };

    /// Reads and validates a superblock from the first `SB_BYTES` of `buf` (the rest of a slot is
    /// ignored). Checks, in order: length, blank, magic, version, checksum, then every field.
    ///
    /// A disk log device's superblock is refused here ([`FormatError::LogDevice`]): legs and log
    /// devices are never mistaken for each other. [`Superblock::decode_log`] reads those.
    pub fn decode(buf: &[u8]) -> Result<Superblock, FormatError> {
        let mut sb = Superblock::ZEROED;
        Superblock::decode_into(buf, &mut sb)?;
        Ok(sb)
    }

    /// Reads and validates a disk log device's superblock (docs/FORMAT.md, section 9); a leg's
    /// superblock is refused ([`FormatError::NotLogDevice`]).
    pub fn decode_log(buf: &[u8]) -> Result<Superblock, FormatError> {
        let mut sb = Superblock::ZEROED;
        Superblock::decode_log_into(buf, &mut sb)?;
        Ok(sb)
    }

    /// Written to a disk log device, not to a leg.
    pub fn is_log_device(&self) -> bool {
        self.leg_index == LOG_DEVICE_INDEX
    }

    /// [`Superblock::decode`] into memory the caller provides, so that a caller with little stack
    /// (a kernel thread) never has a decoded superblock (~1.6 KiB) moved through temporaries.
    /// On error `out` holds an unspecified (partly decoded) value.
    #[inline(always)] // callers call `decode_kind_into` directly
    pub fn decode_into(buf: &[u8], out: &mut Superblock) -> Result<(), FormatError> {
        Superblock::decode_kind_into(buf, out, false)
    }

    /// [`Superblock::decode_log`] into memory the caller provides.
    #[inline(always)]
    pub fn decode_log_into(buf: &[u8], out: &mut Superblock) -> Result<(), FormatError> {
        Superblock::decode_kind_into(buf, out, true)
    }

    /// `decode_into` (`log` false) or `decode_log_into` (`log` true).
    #[inline(never)] // its reader's locals stay out of every caller's frame
    fn decode_kind_into(buf: &[u8], out: &mut Superblock, log: bool) -> Result<(), FormatError> {
        let block = buf.get(..SB_BYTES).ok_or(FormatError::Truncated)?;
        let r = Reader(block);
        if r.bytes::<8>(OFF_MAGIC)? != MAGIC {
            if block.iter().all(|&b| b == 0) {
                return Err(FormatError::Blank);
            }
            return Err(FormatError::BadMagic);
        }
        let version = r.u32(OFF_VERSION)?;
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let stored = r.u32(OFF_CRC)?;
        let head = block.get(..OFF_CRC).ok_or(FormatError::Truncated)?;
        let rest = block.get(OFF_CRC + 4..).ok_or(FormatError::Truncated)?;
        let crc = crc32c(crc32c(crc32c(0, head), &[0; 4]), rest);
        if crc != stored {
            return Err(FormatError::BadChecksum);
        }
        if !r.zero(OFF_RESERVED1, OFF_READ_POLICY_ARG)?
            || !r.zero(OFF_RESERVED2, OFF_LEGS)?
            || !r.zero(OFF_TAIL, SB_BYTES)?
        {
            return Err(FormatError::BadField("reserved"));
        }
        // Field by field into the caller's memory: no superblock-sized local.
        out.seq = r.u64(OFF_SEQ)?;
        out.generation = r.u64(OFF_GENERATION)?;
        out.mirror_uuid = r.bytes(OFF_MIRROR_UUID)?;
        out.leg_index = r.u8(OFF_LEG_INDEX)?;
        out.nlegs = r.u8(OFF_NLEGS)?;
        out.authoritative = r.u8(OFF_AUTHORITATIVE)?;
        out.clean = r.bool(OFF_CLEAN, "clean")?;
        out.sector_size = r.u32(OFF_SECTOR_SIZE)?;
        out.region_sectors = r.u64(OFF_REGION_SECTORS)?;
        out.data_sectors = r.u64(OFF_DATA_SECTORS)?;
        out.bitmap_start = r.u64(OFF_BITMAP_START)?;
        out.bitmap_sectors = r.u64(OFF_BITMAP_SECTORS)?;
        out.tracking_start = r.u64(OFF_TRACKING_START)?;
        out.read_policy = r.u8(OFF_READ_POLICY)?;
        out.read_policy_arg = r.u32(OFF_READ_POLICY_ARG)?;
        out.name = r.bytes(OFF_NAME)?;
        for (k, leg) in out.legs.iter_mut().enumerate() {
            let base = OFF_LEGS + k * LEG_ENTRY_BYTES;
            let mut since = [0u8; 8];
            for (k, b) in since.iter_mut().take(6).enumerate() {
                *b = r.u8(base + LEG_OFF_SINCE + k)?;
            }
            *leg = DiskLeg {
                uuid: r.bytes(base + LEG_OFF_UUID)?,
                state: DiskLegState::try_from(r.u8(base + LEG_OFF_STATE)?)?,
                full: r.bool(base + LEG_OFF_FULL, "leg full")?,
                checkpoint: r.u64(base + LEG_OFF_CHECKPOINT)?,
                sectors: r.u64(base + LEG_OFF_SECTORS)?,
                since: u64::from_le_bytes(since),
            };
        }
        out.validate()?;
        match (out.is_log_device(), log) {
            (true, false) => Err(FormatError::LogDevice),
            (false, true) => Err(FormatError::NotLogDevice),
            _ => Ok(()),
        }
    }
}

/// How much an error says about a slot: a newer version says most (a newer dmirror wrote it),
/// a blank or short buffer least.
fn informativeness(e: &FormatError) -> u8 {
    match e {
        FormatError::UnsupportedVersion(v) if *v > FORMAT_VERSION => 7,
        FormatError::BadField(_)
        | FormatError::LegTooSmall { .. }
        | FormatError::TooManyRegions { .. }
        | FormatError::BitmapTooShort { .. }
        | FormatError::BitmapBitsPastEnd { .. } => 5,
        FormatError::LogDevice | FormatError::NotLogDevice => 6,
        FormatError::WrongSlot { .. } => 4,
        FormatError::UnsupportedVersion(_) | FormatError::BadChecksum => 3,
        FormatError::BadMagic => 2,
        FormatError::Blank => 1,
        FormatError::Truncated => 0,
    }
}

/// The superblock to believe, given what decoding slot 0 and slot 1 gave: the valid one with the
/// higher `seq`. A valid superblock in the wrong slot (odd seq in slot 0, even in slot 1) is not
/// believed. If either slot holds a *newer* format version, the leg is refused with that error
/// even if the other slot is valid: a newer dmirror has written it, and going back to the older
/// slot would silently drop its state. If both slots are invalid, the more informative error.
pub fn newest(
    slot0: Result<Superblock, FormatError>,
    slot1: Result<Superblock, FormatError>,
) -> Result<Superblock, FormatError> {
    let seq = |r: &Result<Superblock, FormatError>| r.as_ref().map(|sb| sb.seq).map_err(|e| *e);
    match pick_slot(seq(&slot0), seq(&slot1))? {
        0 => slot0,
        _ => slot1,
    }
}

/// Decodes both slots of a leg and returns the superblock to believe, by the rule of [`newest`].
pub fn decode_newest(slot0: &[u8], slot1: &[u8]) -> Result<Superblock, FormatError> {
    let mut sb = Superblock::ZEROED;
    decode_newest_into(slot0, slot1, &mut sb)?;
    Ok(sb)
}

/// [`decode_newest`] into memory the caller provides, the only superblock-sized memory it uses
/// (it decodes each slot into `out`, and the chosen one again if it was not the last): for
/// callers with little stack, such as a kernel thread. On error `out` holds an unspecified value.
pub fn decode_newest_into(
    slot0: &[u8],
    slot1: &[u8],
    out: &mut Superblock,
) -> Result<(), FormatError> {
    newest_with(slot0, slot1, out, Superblock::decode_into)
}

/// The slot rule of [`newest`] with `decode` as the decoder (a leg's or a log device's).
fn newest_with(
    slot0: &[u8],
    slot1: &[u8],
    out: &mut Superblock,
    decode: fn(&[u8], &mut Superblock) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let s0 = decode(slot0, out).map(|()| out.seq);
    let s1 = decode(slot1, out).map(|()| out.seq);
    let slot1_ok = s1.is_ok();
    match pick_slot(s0, s1)? {
        0 => decode(slot0, out),
        // `out` holds slot 1 already (decoded last, and it decoded).
        _ if slot1_ok => Ok(()),
        _ => decode(slot1, out),
    }
}

/// [`decode_newest`] for the two slots of a disk log device (the same slot rule).
pub fn decode_newest_log(slot0: &[u8], slot1: &[u8]) -> Result<Superblock, FormatError> {
    let mut sb = Superblock::ZEROED;
    decode_newest_log_into(slot0, slot1, &mut sb)?;
    Ok(sb)
}

/// [`decode_newest_log`] into memory the caller provides (as [`decode_newest_into`]).
pub fn decode_newest_log_into(
    slot0: &[u8],
    slot1: &[u8],
    out: &mut Superblock,
) -> Result<(), FormatError> {
    newest_with(slot0, slot1, out, Superblock::decode_log_into)
}

/// The `leg_index` value that marks a disk log device's superblock (never a leg's: a leg's index
/// is below `nlegs <= 32`, so a version-1 reader that predates disk logs refuses it too).
pub const LOG_DEVICE_INDEX: u8 = 0xFF;

/// The layout of a disk log device (docs/FORMAT.md, section 9): the whole device is metadata, laid
/// out from its START — slot 0 at sector 0, slot 1 right after it, then the write-intent bitmap
/// and the tracking bitmaps (leg k's at `tracking(k)`, as on a leg; only the table's legs' are
/// kept, see [`log_device_sectors`]). `meta_start` is 0 (no data). The positions depend
/// only on the geometry, never on the device's size; [`log_device_sectors`] is the size needed.
pub fn log_layout(
    sector_size: u32,
    region_sectors: u64,
    data_sectors: u64,
) -> Result<Layout, FormatError> {
    let regions = check_geometry(sector_size, region_sectors, data_sectors)?;
    let slot = slot_sectors(sector_size);
    let bms = bitmap_sectors(regions, sector_size);
    let bitmap_start = slot * 2;
    Ok(Layout {
        slot_sectors: slot,
        slots: [0, slot],
        bitmap_start,
        bitmap_sectors: bms,
        tracking_start: bitmap_start + bms,
        meta_start: 0,
        regions,
    })
}

/// Sectors a disk log device must have for this geometry and `legs` legs: two slots, the
/// write-intent bitmap and one tracking bitmap per leg (T0..T(legs-1); the slots of the other
/// tracking bitmaps of the layout are never written on a log device, which keeps it small —
/// lvm2 sizes its log volumes for Linux's one-bitmap log).
pub fn log_device_sectors(
    sector_size: u32,
    region_sectors: u64,
    data_sectors: u64,
    legs: u8,
) -> Result<u64, FormatError> {
    if legs == 0 || usize::from(legs) > MAX_LEGS {
        return Err(FormatError::BadField("nlegs"));
    }
    let l = log_layout(sector_size, region_sectors, data_sectors)?;
    l.bitmap_sectors
        .checked_mul(u64::from(legs) + 1)
        .and_then(|b| b.checked_add(l.bitmap_start))
        .ok_or(FormatError::TooManyRegions { regions: l.regions })
}

/// The rule of [`newest`] on what decoding each slot gave (its seq, or why it is unusable):
/// which slot to believe (0 or 1), or the error to report.
fn pick_slot(
    s0: Result<u64, FormatError>,
    s1: Result<u64, FormatError>,
) -> Result<u8, FormatError> {
    let parity = |r: Result<u64, FormatError>, slot: u8| match r {
        Ok(seq) if seq & 1 != u64::from(slot) => Err(FormatError::WrongSlot { seq, slot }),
        other => other,
    };
    let (a, b) = (parity(s0, 0), parity(s1, 1));
    for r in [&a, &b] {
        if let Err(e @ FormatError::UnsupportedVersion(v)) = r {
            if *v > FORMAT_VERSION {
                return Err(*e);
            }
        }
    }
    match (a, b) {
        (Ok(x), Ok(y)) => Ok(if y > x { 1 } else { 0 }),
        (Ok(_), Err(_)) => Ok(0),
        (Err(_), Ok(_)) => Ok(1),
        (Err(x), Err(y)) => Err(if informativeness(&y) > informativeness(&x) {
            y
        } else {
            x
        }),
    }
}

/// ORs the bitmap `src` into `dst` (over the shorter of the two).
pub fn or_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d |= *s;
    }
}

/// Displays a UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub struct UuidDisplay<'u>(pub &'u [u8; 16]);

impl fmt::Display for UuidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    const LEG: u64 = 1 << 21; // 1 GiB of 512-byte sectors

    fn uuid(b: u8) -> [u8; 16] {
        [b; 16]
    }

    fn leg(b: u8, state: DiskLegState, sectors: u64) -> DiskLeg {
        DiskLeg {
            uuid: uuid(b),
            state,
            full: false,
            checkpoint: 0,
            sectors,
            since: 0,
        }
    }

    fn name(s: &str) -> [u8; 32] {
        let mut n = [0u8; 32];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    /// A valid two-leg superblock for leg 0.
    fn sample() -> Superblock {
        let data = max_data_sectors(LEG, 512, 1024);
        let legs = [
            leg(1, DiskLegState::InSync, LEG),
            leg(2, DiskLegState::InSync, LEG),
        ];
        Superblock::new(uuid(9), name("tank"), 512, 1024, data, &legs, 0, 0).unwrap()
    }

    fn enc(sb: &Superblock) -> Vec<u8> {
        let mut b = vec![0xAA; SB_BYTES];
        sb.encode(&mut b).unwrap();
        b
    }

    /// Writes a superblock without validating it (to build invalid ones with a good CRC).
    fn enc_raw(sb: &Superblock) -> Vec<u8> {
        let mut b = enc(&sample());
        let mut w = Writer(&mut b);
        w.put(OFF_SEQ, &sb.seq.to_le_bytes()).unwrap();
        w.put(OFF_GENERATION, &sb.generation.to_le_bytes()).unwrap();
        w.put(OFF_MIRROR_UUID, &sb.mirror_uuid).unwrap();
        w.put(
            OFF_LEG_INDEX,
            &[sb.leg_index, sb.nlegs, sb.authoritative, u8::from(sb.clean)],
        )
        .unwrap();
        w.put(OFF_SECTOR_SIZE, &sb.sector_size.to_le_bytes())
            .unwrap();
        w.put(OFF_REGION_SECTORS, &sb.region_sectors.to_le_bytes())
            .unwrap();
        w.put(OFF_DATA_SECTORS, &sb.data_sectors.to_le_bytes())
            .unwrap();
        w.put(OFF_BITMAP_START, &sb.bitmap_start.to_le_bytes())
            .unwrap();
        w.put(OFF_BITMAP_SECTORS, &sb.bitmap_sectors.to_le_bytes())
            .unwrap();
        w.put(OFF_TRACKING_START, &sb.tracking_start.to_le_bytes())
            .unwrap();
        w.put(OFF_READ_POLICY, &[sb.read_policy]).unwrap();
        w.put(OFF_READ_POLICY_ARG, &sb.read_policy_arg.to_le_bytes())
            .unwrap();
        w.put(OFF_NAME, &sb.name).unwrap();
        for (k, l) in sb.legs.iter().enumerate() {
            let base = OFF_LEGS + k * LEG_ENTRY_BYTES;
            w.put(base + LEG_OFF_UUID, &l.uuid).unwrap();
            w.put(base + LEG_OFF_STATE, &[l.state as u8, u8::from(l.full)])
                .unwrap();
            w.put(base + LEG_OFF_CHECKPOINT, &l.checkpoint.to_le_bytes())
                .unwrap();
            w.put(base + LEG_OFF_SECTORS, &l.sectors.to_le_bytes())
                .unwrap();
        }
        fix_crc(&mut b);
        b
    }

    fn fix_crc(b: &mut [u8]) {
        b[OFF_CRC..OFF_CRC + 4].fill(0);
        let c = crc32c(0, &b[..SB_BYTES]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&c.to_le_bytes());
    }

    fn crc_bitwise(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ CRC32C_POLY
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn crc32c_check_value_and_chaining() {
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(0, b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros, of 0xff.
        assert_eq!(crc32c(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(0, &[0xffu8; 32]), 0x62A8_AB43);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 999, 1000] {
            let whole = crc32c(0, &data[..len]);
            assert_eq!(whole, crc_bitwise(&data[..len]), "len {len}");
            for cut in [0, len / 3, len / 2, len] {
                assert_eq!(crc32c(crc32c(0, &data[..cut]), &data[cut..len]), whole);
            }
        }
    }

    #[test]
    fn layout_offsets_are_pinned() {
        // The documented offsets (docs/FORMAT.md); changing one is a new format version.
        assert_eq!(
            [
                OFF_SEQ,
                OFF_GENERATION,
                OFF_MIRROR_UUID,
                OFF_LEG_INDEX,
                OFF_SECTOR_SIZE
            ],
            [16, 24, 32, 48, 52]
        );
        assert_eq!(
            [OFF_REGION_SECTORS, OFF_DATA_SECTORS, OFF_BITMAP_START],
            [56, 64, 72]
        );
        assert_eq!(
            [OFF_BITMAP_SECTORS, OFF_TRACKING_START, OFF_READ_POLICY],
            [80, 88, 96]
        );
        assert_eq!(
            [OFF_READ_POLICY_ARG, OFF_NAME, OFF_LEGS, OFF_TAIL],
            [100, 104, 256, 1536]
        );
        let b = enc(&sample());
        assert_eq!(&b[..8], b"DMIRROR\x01");
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 512);
        assert_eq!(&b[OFF_LEGS..OFF_LEGS + 16], &[1u8; 16]);
        assert_eq!(b[OFF_LEGS + LEG_OFF_STATE], 1);
        assert_eq!(&b[OFF_LEGS + 40..OFF_LEGS + 56], &[2u8; 16]);
        assert!(b[OFF_TAIL..].iter().all(|&x| x == 0));
    }

    #[test]
    fn round_trip() {
        let mut sb = sample();
        sb.seq = 0x0102_0304_0506_0708;
        sb.generation = 77;
        sb.clean = false;
        sb.authoritative = 1;
        sb.read_policy = READ_SPLIT;
        sb.read_policy_arg = 64;
        sb.legs[1].state = DiskLegState::Rebuilding;
        sb.legs[1].full = true;
        sb.legs[1].checkpoint = 17;
        sb.legs[2] = leg(3, DiskLegState::Missing, LEG + 12345);
        sb.nlegs = 4;
        sb.legs[3] = leg(4, DiskLegState::Failed, LEG * 2);
        let b = enc(&sb);
        let d = Superblock::decode(&b).unwrap();
        assert_eq!(d, sb);
        assert_eq!(d.leg_uuid(), uuid(1));
        assert_eq!(d.read_policy(), Some(ReadPolicy::Split { min_sectors: 64 }));
        // A larger slot buffer: the bytes past SB_BYTES are ignored, and encode leaves them.
        let mut big = vec![0x55u8; 8192];
        sb.encode(&mut big).unwrap();
        assert!(big[SB_BYTES..].iter().all(|&x| x == 0x55));
        assert_eq!(Superblock::decode(&big).unwrap(), sb);
        // Retargeted at leg 3: other positions (its size differs), same state.
        let s3 = sb.for_leg(3).unwrap();
        assert_eq!(s3.leg_uuid(), uuid(4));
        assert_ne!(s3.bitmap_start, sb.bitmap_start);
        assert_eq!(Superblock::decode(&enc(&s3)).unwrap(), s3);
        for p in [
            ReadPolicy::RoundRobin { batch: 8 },
            ReadPolicy::Load,
            ReadPolicy::Prefer { leg: 1 },
            ReadPolicy::Split { min_sectors: 9 },
        ] {
            let mut s = sample();
            (s.read_policy, s.read_policy_arg) = encode_read_policy(p);
            assert_eq!(Superblock::decode(&enc(&s)).unwrap().read_policy(), Some(p));
        }
    }

    #[test]
    fn new_refuses_bad_labels() {
        let l = [leg(1, DiskLegState::InSync, LEG)];
        let new = |legs: &[DiskLeg], idx: u8, data: u64| {
            Superblock::new(uuid(9), [0; 32], 512, 1024, data, legs, idx, 0)
        };
        assert_eq!(new(&[], 0, 100), Err(FormatError::BadField("nlegs")));
        assert_eq!(
            new(&[l[0]; 33], 0, 100),
            Err(FormatError::BadField("nlegs"))
        );
        assert_eq!(new(&l, 1, 100), Err(FormatError::BadField("leg_index")));
        assert!(matches!(
            new(&l, 0, LEG),
            Err(FormatError::LegTooSmall { .. })
        ));
        let sb = new(&l, 0, 100).unwrap();
        assert_eq!((sb.seq, sb.generation, sb.clean, sb.nlegs), (0, 1, true, 1));
        assert_eq!(sb.read_policy(), Some(ReadPolicy::default()));
    }

    #[test]
    fn leg_state_conversions() {
        for s in [
            DiskLegState::Empty,
            DiskLegState::InSync,
            DiskLegState::Rebuilding,
            DiskLegState::Failed,
            DiskLegState::Missing,
        ] {
            assert_eq!(DiskLegState::from(LegState::from(s)), s);
            assert_eq!(DiskLegState::try_from(s as u8), Ok(s));
        }
        assert_eq!(
            DiskLegState::try_from(5),
            Err(FormatError::BadField("leg state"))
        );
        assert_eq!(DiskLeg::default(), DiskLeg::EMPTY);
    }

    #[test]
    fn header_rejections() {
        let good = enc(&sample());
        assert_eq!(
            Superblock::decode(&good[..SB_BYTES - 1]),
            Err(FormatError::Truncated)
        );
        assert_eq!(
            sample().encode(&mut [0u8; 100]),
            Err(FormatError::Truncated)
        );
        assert_eq!(
            Superblock::decode(&[0u8; SB_BYTES]),
            Err(FormatError::Blank)
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Superblock::decode(&b), Err(FormatError::BadMagic));
        let mut b = good.clone();
        b[OFF_VERSION] = 2;
        let e = Superblock::decode(&b).unwrap_err();
        assert_eq!(e, FormatError::UnsupportedVersion(2));
        assert!(e.to_string().contains("version 2 is newer"), "{e}");
        b[OFF_VERSION] = 0;
        assert_eq!(
            Superblock::decode(&b),
            Err(FormatError::UnsupportedVersion(0))
        );
        for at in [OFF_SEQ, OFF_NAME, OFF_LEGS + 3, 4095] {
            let mut b = good.clone();
            b[at] ^= 0x10;
            assert_eq!(
                Superblock::decode(&b),
                Err(FormatError::BadChecksum),
                "byte {at}"
            );
        }
        let mut b = good.clone();
        b[OFF_CRC] ^= 1;
        assert_eq!(Superblock::decode(&b), Err(FormatError::BadChecksum));
    }

    #[test]
    fn raw_byte_rejections() {
        let good = enc(&sample());
        let cases: [(usize, u8, &str); 8] = [
            (OFF_RESERVED1, 1, "reserved"),
            (OFF_RESERVED2 + 5, 1, "reserved"),
            (OFF_TAIL, 1, "reserved"),
            (SB_BYTES - 1, 1, "reserved"),
            (
                OFF_LEGS + LEG_OFF_SINCE + 5,
                1,
                "leg since (after the superblock's generation)",
            ),
            (OFF_LEGS + LEG_OFF_STATE, 9, "leg state"),
            (OFF_LEGS + LEG_OFF_FULL, 2, "leg full"),
            (OFF_CLEAN, 2, "clean"),
        ];
        for (at, v, field) in cases {
            let mut b = good.clone();
            b[at] = v;
            fix_crc(&mut b);
            assert_eq!(
                Superblock::decode(&b),
                Err(FormatError::BadField(field)),
                "byte {at}"
            );
        }
    }

    #[test]
    fn field_rejections() {
        let base = sample();
        let r = base.regions();
        type Mutate = fn(&mut Superblock);
        let cases: Vec<(Mutate, FormatError)> = vec![
            (
                |s| s.mirror_uuid = [0; 16],
                FormatError::BadField("mirror_uuid"),
            ),
            (|s| s.nlegs = 0, FormatError::BadField("nlegs")),
            (|s| s.nlegs = 33, FormatError::BadField("nlegs")),
            (|s| s.leg_index = 2, FormatError::BadField("leg_index")),
            (
                |s| s.authoritative = 2,
                FormatError::BadField("authoritative"),
            ),
            (
                |s| s.sector_size = 1000,
                FormatError::BadField("sector_size"),
            ),
            (
                |s| s.sector_size = 256,
                FormatError::BadField("sector_size"),
            ),
            (
                |s| s.sector_size = 131072,
                FormatError::BadField("sector_size"),
            ),
            (
                |s| s.region_sectors = 3,
                FormatError::BadField("region_sectors"),
            ),
            (
                |s| s.region_sectors = 0,
                FormatError::BadField("region_sectors"),
            ),
            (
                |s| s.data_sectors = 0,
                FormatError::BadField("data_sectors"),
            ),
            (
                |s| {
                    s.region_sectors = 1;
                    s.data_sectors = MAX_REGIONS + 1;
                },
                FormatError::TooManyRegions { regions: 0 }, // regions patched below
            ),
            (
                |s| s.legs[5].sectors = 1,
                FormatError::BadField("leg table (empty slot not zeroed)"),
            ),
            (
                |s| s.legs[1].state = DiskLegState::Empty,
                FormatError::BadField("leg table (empty slot not zeroed)"),
            ),
            (
                |s| s.legs[1].uuid = [0; 16],
                FormatError::BadField("leg uuid"),
            ),
            (
                |s| s.legs[1].uuid = [1; 16],
                FormatError::BadField("leg uuid (duplicate)"),
            ),
            (
                |s| s.legs[1].full = true,
                FormatError::BadField("leg rebuild (set on a leg not rebuilding)"),
            ),
            (
                |s| s.legs[1].checkpoint = 1,
                FormatError::BadField("leg rebuild (set on a leg not rebuilding)"),
            ),
            (
                |s| {
                    s.legs[1].state = DiskLegState::Rebuilding;
                    s.legs[1].checkpoint = s.regions() + 1;
                },
                FormatError::BadField("leg checkpoint"),
            ),
            (
                |s| s.legs[1].sectors = 100,
                FormatError::BadField("leg sectors"),
            ),
            (
                |s| s.bitmap_start += 1,
                FormatError::BadField("bitmap_start"),
            ),
            (
                |s| s.bitmap_sectors += 1,
                FormatError::BadField("bitmap_sectors"),
            ),
            (
                |s| s.tracking_start -= 1,
                FormatError::BadField("tracking_start"),
            ),
            (|s| s.read_policy = 4, FormatError::BadField("read_policy")),
            (
                |s| s.read_policy_arg = 0,
                FormatError::BadField("read_policy"),
            ),
            (
                |s| {
                    s.read_policy = READ_PREFER;
                    s.read_policy_arg = 2;
                },
                FormatError::BadField("read_policy"),
            ),
            (
                |s| {
                    s.read_policy = READ_LOAD;
                    s.read_policy_arg = 1;
                },
                FormatError::BadField("read_policy"),
            ),
            (
                |s| s.name[31] = b'x',
                FormatError::BadField("name (not NUL padded)"),
            ),
        ];
        for (i, (mutate, want)) in cases.into_iter().enumerate() {
            let mut s = base;
            mutate(&mut s);
            let want = match want {
                FormatError::TooManyRegions { .. } => FormatError::TooManyRegions {
                    regions: s.data_sectors,
                },
                w => w,
            };
            assert_eq!(s.validate(), Err(want), "case {i}");
            assert_eq!(
                s.encode(&mut [0u8; SB_BYTES]),
                Err(want),
                "case {i}: encode"
            );
            assert_eq!(
                Superblock::decode(&enc_raw(&s)),
                Err(want),
                "case {i}: decode"
            );
            assert!(!want.to_string().is_empty());
        }
        assert!(r > 0);
        // The own slot may not be empty (but may be any other state).
        let mut s = base;
        s.leg_index = 1;
        s.legs[1] = DiskLeg::EMPTY;
        assert_eq!(
            Superblock::decode(&enc_raw(&s)),
            Err(FormatError::BadField("leg_index (own slot is empty)"))
        );
        for st in [
            DiskLegState::Failed,
            DiskLegState::Missing,
            DiskLegState::Rebuilding,
        ] {
            let mut s = base;
            s.legs[0].state = st;
            assert_eq!(Superblock::decode(&enc(&s)).unwrap().own().state, st);
        }
    }

    #[test]
    fn newest_picks_valid_higher_seq_in_the_right_slot() {
        let mut s0 = sample();
        s0.seq = 10;
        let mut s1 = sample();
        s1.seq = 11;
        s1.generation = 2;
        let (b0, b1) = (enc(&s0), enc(&s1));
        let d = |b: &[u8]| Superblock::decode(b);
        assert_eq!(newest(d(&b0), d(&b1)).unwrap().seq, 11);
        s0.seq = 12;
        let b0 = enc(&s0);
        assert_eq!(newest(d(&b0), d(&b1)).unwrap().seq, 12);
        // A torn write of the newest slot (seq 13 into slot 1): the previous state is read.
        let mut s13 = s1;
        s13.seq = 13;
        // Sector 0 (seq, CRC) written, sector 1 still holding garbage from an older write.
        let mut torn = enc(&s13);
        torn[512..1024].fill(0xEE);
        assert_eq!(d(&torn), Err(FormatError::BadChecksum));
        assert_eq!(newest(d(&b0), d(&torn)).unwrap().seq, 12);
        // A superblock in the wrong slot is not believed.
        assert_eq!(
            newest(d(&b1), d(&b0)),
            Err(FormatError::WrongSlot { seq: 11, slot: 0 })
        );
        assert_eq!(newest(d(&b0), d(&b0)).unwrap().seq, 12);
        // Both bad: the more informative error.
        let blank = [0u8; SB_BYTES];
        assert_eq!(newest(d(&blank), d(&torn)), Err(FormatError::BadChecksum));
        assert_eq!(newest(d(&torn), d(&blank)), Err(FormatError::BadChecksum));
        assert_eq!(newest(d(&blank), d(&blank)), Err(FormatError::Blank));
        let mut junk = vec![1u8; SB_BYTES];
        junk[0] = 0;
        assert_eq!(newest(d(&blank), d(&junk)), Err(FormatError::BadMagic));
        // A newer version in either slot refuses the leg, even next to a valid slot.
        let mut v2 = b1.clone();
        v2[OFF_VERSION] = 2;
        assert_eq!(
            newest(d(&b0), d(&v2)),
            Err(FormatError::UnsupportedVersion(2))
        );
        assert_eq!(
            newest(d(&v2), d(&b1)),
            Err(FormatError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn decode_newest_follows_the_same_rule() {
        let mut s0 = sample();
        s0.seq = 4;
        let mut s1 = sample();
        s1.seq = 5;
        let (b0, b1) = (enc(&s0), enc(&s1));
        let mut torn = b1.clone();
        torn[600] ^= 1;
        let mut v2 = b1.clone();
        v2[OFF_VERSION] = 9;
        let blank = vec![0u8; SB_BYTES];
        let all = [&b0, &b1, &torn, &v2, &blank];
        for x in all {
            for y in all {
                let want = newest(Superblock::decode(x), Superblock::decode(y));
                assert_eq!(decode_newest(x, y), want);
            }
        }
        assert_eq!(decode_newest(&b0, &b1).unwrap().seq, 5);
        assert_eq!(decode_newest(&b0, &torn).unwrap().seq, 4);
    }

    #[test]
    fn default_region_rule() {
        let max_regions = 1u64 << 20;
        for data in [
            0,
            1,
            1024,
            max_regions * 1024,
            max_regions * 1024 + 1,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let r = default_region_sectors(data, 512);
            assert!(r.is_power_of_two() && r >= 1024, "{data}: {r}");
            assert!(data.div_ceil(r) <= max_regions, "{data}: {r}");
            // Minimal: half the region would need a bigger bitmap.
            if r > 1024 {
                assert!(data.div_ceil(r / 2) > max_regions);
            }
        }
        assert_eq!(default_region_sectors(max_regions * 1024, 512), 1024);
        assert_eq!(default_region_sectors(max_regions * 1024 + 1, 512), 2048);
        // Exactly at the boundary the bitmap is 128 KiB: 256 sectors of 512 bytes.
        let data = max_regions * 1024;
        let l = layout(data + 10_000, 512, 1024, data).unwrap();
        assert_eq!(l.regions, max_regions);
        assert_eq!(l.bitmap_sectors, 256);
        let l = layout(data + 10_000, 512, 1024, data + 1).unwrap();
        assert_eq!(l.bitmap_sectors, 257);
    }

    #[test]
    fn slot_positions_are_aligned_and_sector_size_independent() {
        assert_eq!(slot_positions(1000, 512), [984, 992]); // 1000-8 = 992, aligned
        assert_eq!(slot_positions(1003, 512), [984, 992]); // tail of 3 sectors unused
        assert_eq!(slot_positions(16, 512), [0, 8]);
        assert_eq!(slot_positions(15, 512), [0, 0]);
        assert_eq!(slot_positions(100, 4096), [98, 99]);
        assert_eq!(slot_positions(100, 8192), [98, 99]);
        assert_eq!(slot_positions(1, 4096), [0, 0]);
        assert_eq!(slot_positions(100, 1000), [0, 0]);
        assert_eq!(
            slot_positions(u64::MAX, 512),
            [u64::MAX / 8 * 8 - 16, u64::MAX / 8 * 8 - 8]
        );
        // Same byte offsets for 512- and 4096-byte sectors on a 4 KiB-multiple device.
        for bytes in [1u64 << 30, (1 << 30) + 4096 * 7, 8192] {
            let a = slot_positions(bytes / 512, 512).map(|s| s * 512);
            let b = slot_positions(bytes / 4096, 4096).map(|s| s * 4096);
            assert_eq!(a, b);
            assert_eq!(b[1], bytes - 4096);
        }
    }

    #[test]
    fn layout_math() {
        let l = layout(LEG, 512, 1024, 1000).unwrap();
        assert_eq!(l.slot_sectors, 8);
        assert_eq!(l.slots, [LEG - 16, LEG - 8]);
        assert_eq!(l.regions, 1);
        assert_eq!(l.bitmap_sectors, 1);
        assert_eq!(l.tracking_start, LEG - 16 - 32);
        assert_eq!(l.bitmap_start, LEG - 16 - 33);
        assert_eq!(l.meta_start, l.bitmap_start);
        assert_eq!(l.tracking(31), Some(LEG - 17));
        assert_eq!(l.tracking(32), None);
        // 4K sectors: one-sector slots.
        let l = layout(1 << 18, 4096, 256, 100_000).unwrap();
        assert_eq!(
            (l.slot_sectors, l.slots),
            (1, [(1 << 18) - 2, (1 << 18) - 1])
        );
        assert_eq!(l.regions, 391);
        assert_eq!(l.bitmap_sectors, 1);
        assert_eq!(l.bitmap_start, (1 << 18) - 2 - 33);
        // 64K sectors.
        let l = layout(1000, 65536, 1, 900).unwrap();
        assert_eq!(l.slots, [998, 999]);
        // Tiny legs: the minimum fits, one sector less does not, and the error says the minimum.
        for (ss, region, data) in [
            (512u32, 1024u64, 1u64),
            (512, 1, 5000),
            (4096, 8, 77),
            (512, 1024, 100_000),
        ] {
            let Err(FormatError::LegTooSmall { needed, actual }) = layout(1, ss, region, data)
            else {
                panic!("a 1-sector leg fits");
            };
            assert_eq!(actual, 1);
            assert!(
                layout(needed, ss, region, data).is_ok(),
                "{ss} {region} {data}"
            );
            assert_eq!(
                layout(needed - 1, ss, region, data),
                Err(FormatError::LegTooSmall {
                    needed,
                    actual: needed - 1
                })
            );
            assert!(max_data_sectors(needed, ss, region) >= data);
        }
        assert_eq!(
            layout(15, 512, 1024, 1),
            Err(FormatError::LegTooSmall {
                needed: 56,
                actual: 15
            })
        );
        assert_eq!(max_data_sectors(55, 512, 1024), 0);
        assert_eq!(max_data_sectors(56, 512, 1024), 7); // slot 0 at 40, 33 bitmap sectors below it
                                                        // Huge legs: no overflow, and data fills the leg up to the metadata.
        let huge = u64::MAX;
        let region = default_region_sectors(huge, 512);
        let d = max_data_sectors(huge, 512, region);
        let l = layout(huge, 512, region, d).unwrap();
        assert_eq!(l.meta_start, d);
        assert!(layout(huge, 512, region, d + 1).is_err());
        assert!(l.regions <= 1 << 20);
        // Too many regions.
        assert_eq!(
            layout(huge, 512, 1, MAX_REGIONS + 1),
            Err(FormatError::TooManyRegions {
                regions: MAX_REGIONS + 1
            })
        );
        assert_eq!(
            layout(LEG, 512, 6, 10),
            Err(FormatError::BadField("region_sectors"))
        );
        assert_eq!(
            layout(LEG, 0, 8, 10),
            Err(FormatError::BadField("sector_size"))
        );
        assert_eq!(
            layout(LEG, 512, 8, 0),
            Err(FormatError::BadField("data_sectors"))
        );
    }

    #[test]
    fn max_data_is_the_largest_that_fits() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let leg = x % (1 << 40);
            let ss = 512u32 << (x % 8);
            let region = 1u64 << ((x >> 8) % 24);
            let d = max_data_sectors(leg, ss, region);
            if d == 0 {
                assert!(layout(leg, ss, region, 1).is_err());
                continue;
            }
            let l = layout(leg, ss, region, d).unwrap();
            assert!(l.meta_start >= d && l.slots[1] + l.slot_sectors <= leg);
            assert!(
                layout(leg, ss, region, d + 1).is_err(),
                "{leg} {ss} {region} {d}"
            );
        }
    }

    #[test]
    fn bitmaps() {
        assert_eq!(check_bitmap(&[0xff, 0x0f], 12), Ok(()));
        assert_eq!(
            check_bitmap(&[0xff, 0x1f], 12),
            Err(FormatError::BitmapBitsPastEnd { region: 12 })
        );
        assert_eq!(
            check_bitmap(&[0xff, 0x0f, 0, 0x80], 12),
            Err(FormatError::BitmapBitsPastEnd { region: 31 })
        );
        assert_eq!(check_bitmap(&[0xff, 0xff], 16), Ok(()));
        assert_eq!(
            check_bitmap(&[0xff, 0xff, 1], 16),
            Err(FormatError::BitmapBitsPastEnd { region: 16 })
        );
        assert_eq!(
            check_bitmap(&[0xff], 9),
            Err(FormatError::BitmapTooShort {
                needed: 2,
                actual: 1
            })
        );
        assert_eq!(check_bitmap(&[], 0), Ok(()));
        assert_eq!(
            check_bitmap(&[1], 0),
            Err(FormatError::BitmapBitsPastEnd { region: 0 })
        );
        let mut a = [0b0001u8, 0, 0xf0];
        or_into(&mut a, &[0b0100, 0x80]);
        assert_eq!(a, [0b0101, 0x80, 0xf0]);
    }

    #[test]
    fn every_error_displays_a_sentence() {
        let all = [
            FormatError::Truncated,
            FormatError::Blank,
            FormatError::BadMagic,
            FormatError::UnsupportedVersion(3),
            FormatError::UnsupportedVersion(0),
            FormatError::BadChecksum,
            FormatError::BadField("x"),
            FormatError::WrongSlot { seq: 1, slot: 0 },
            FormatError::LegTooSmall {
                needed: 2,
                actual: 1,
            },
            FormatError::TooManyRegions { regions: 5 },
            FormatError::BitmapTooShort {
                needed: 2,
                actual: 1,
            },
            FormatError::BitmapBitsPastEnd { region: 7 },
        ];
        for e in all {
            let s = e.to_string();
            assert!(s.len() > 10, "{e:?}: {s}");
        }
        assert_eq!(
            format!("{}", UuidDisplay(&[0xab; 16])),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
