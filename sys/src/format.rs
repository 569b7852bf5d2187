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
pub const LEG_OFF_RESERVED: usize = 18; // [u8; 6], zero
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
const_assert!(LEG_OFF_RESERVED == LEG_OFF_FULL + 1);
const_assert!(LEG_OFF_CHECKPOINT == LEG_OFF_RESERVED + 6);
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

#[inline(always)]
fn tab(table: usize, index: u32) -> u32 {
    match CRC_TABLES
        .get(table)
        .and_then(|t| t.get((index & 0xff) as usize))
    {
        Some(v) => *v,
        None => 0, // not reachable: table < 8 and index masked to a byte
    }
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
        c = tab(7, lo)
            ^ tab(6, lo >> 8)
            ^ tab(5, lo >> 16)
            ^ tab(4, lo >> 24)
            ^ tab(3, hi)
            ^ tab(2, hi >> 8)
            ^ tab(1, hi >> 16)
            ^ tab(0, hi >> 24);
    }
    for &b in chunks.remainder() {
        c = tab(0, c ^ u32::from(b)) ^ (c >> 8);
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
}

impl DiskLeg {
    /// An empty slot (all zeros on disk).
    pub const EMPTY: DiskLeg = DiskLeg {
        uuid: [0; 16],
        state: DiskLegState::Empty,
        full: false,
        checkpoint: 0,
        sectors: 0,
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
        if self.leg_index >= self.nlegs {
            return Err(FormatError::BadField("leg_index"));
        }
        if self.authoritative >= self.nlegs {
            return Err(FormatError::BadField("authoritative"));
        }
        let regions = check_geometry(self.sector_size, self.region_sectors, self.data_sectors)?;
        for (k, leg) in self.legs.iter().enumerate() {
            if k >= usize::from(self.nlegs) || leg.state == DiskLegState::Empty {
                if *leg != DiskLeg::EMPTY {
                    return Err(FormatError::BadField("leg table (empty slot not zeroed)"));
                }
                continue;
            }
            if leg.uuid == [0; 16] {
                return Err(FormatError::BadField("leg uuid"));
            }
            if self.legs.iter().take(k).any(|o| o.uuid == leg.uuid) {
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
        if self.own().state == DiskLegState::Empty {
            return Err(FormatError::BadField("leg_index (own slot is empty)"));
        }
        let l = self.layout()?;
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
            w.put(base + LEG_OFF_CHECKPOINT, &leg.checkpoint.to_le_bytes())?;
            w.put(base + LEG_OFF_SECTORS, &leg.sectors.to_le_bytes())?;
        }
        let crc = crc32c(0, w.0);
        w.put(OFF_CRC, &crc.to_le_bytes())?;
        Ok(())
    }

    /// Reads and validates a superblock from the first `SB_BYTES` of `buf` (the rest of a slot is
    /// ignored). Checks, in order: length, blank, magic, version, checksum, then every field.
    pub fn decode(buf: &[u8]) -> Result<Superblock, FormatError> {
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
        let mut legs = [DiskLeg::EMPTY; MAX_LEGS];
        for (k, leg) in legs.iter_mut().enumerate() {
            let base = OFF_LEGS + k * LEG_ENTRY_BYTES;
            if !r.zero(base + LEG_OFF_RESERVED, base + LEG_OFF_CHECKPOINT)? {
                return Err(FormatError::BadField("reserved"));
            }
            *leg = DiskLeg {
                uuid: r.bytes(base + LEG_OFF_UUID)?,
                state: DiskLegState::try_from(r.u8(base + LEG_OFF_STATE)?)?,
                full: r.bool(base + LEG_OFF_FULL, "leg full")?,
                checkpoint: r.u64(base + LEG_OFF_CHECKPOINT)?,
                sectors: r.u64(base + LEG_OFF_SECTORS)?,
            };
        }
        let sb = Superblock {
            seq: r.u64(OFF_SEQ)?,
            generation: r.u64(OFF_GENERATION)?,
            mirror_uuid: r.bytes(OFF_MIRROR_UUID)?,
            leg_index: r.u8(OFF_LEG_INDEX)?,
            nlegs: r.u8(OFF_NLEGS)?,
            authoritative: r.u8(OFF_AUTHORITATIVE)?,
            clean: r.bool(OFF_CLEAN, "clean")?,
            sector_size: r.u32(OFF_SECTOR_SIZE)?,
            region_sectors: r.u64(OFF_REGION_SECTORS)?,
            data_sectors: r.u64(OFF_DATA_SECTORS)?,
            bitmap_start: r.u64(OFF_BITMAP_START)?,
            bitmap_sectors: r.u64(OFF_BITMAP_SECTORS)?,
            tracking_start: r.u64(OFF_TRACKING_START)?,
            read_policy: r.u8(OFF_READ_POLICY)?,
            read_policy_arg: r.u32(OFF_READ_POLICY_ARG)?,
            name: r.bytes(OFF_NAME)?,
            legs,
        };
        sb.validate()?;
        Ok(sb)
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
    let check = |r: Result<Superblock, FormatError>, slot: u8| match r {
        Ok(sb) if sb.seq & 1 != u64::from(slot) => {
            Err(FormatError::WrongSlot { seq: sb.seq, slot })
        }
        other => other,
    };
    let (a, b) = (check(slot0, 0), check(slot1, 1));
    for r in [&a, &b] {
        if let Err(e @ FormatError::UnsupportedVersion(v)) = r {
            if *v > FORMAT_VERSION {
                return Err(*e);
            }
        }
    }
    match (a, b) {
        (Ok(x), Ok(y)) => Ok(if y.seq > x.seq { y } else { x }),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
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
