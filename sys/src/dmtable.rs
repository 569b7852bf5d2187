//! The device-mapper `mirror` target's table: parsing, checking against the devices, and the
//! `dmsetup table` / `dmsetup status` lines.
//!
//! This is pure core code: no allocation, no panics, bounded work. The dm shim (DragonFly and
//! NetBSD) hands the parameter string of a table line to [`parse`] (or [`parse_bytes`] through the
//! C ABI), opens the devices it names, checks their sizes with [`check_devices`], and formats
//! `dmsetup table` / `dmsetup status` answers with [`format_table`] / [`format_status`] into a
//! [`BufWriter`]. Errors are [`TableError`]s whose one-line message names the problem
//! ([`write_message`] copies it, NUL-terminated, into a C buffer).
//!
//! # Table syntax
//!
//! The Linux dm-mirror syntax, so lvm2 and existing `dmsetup` scripts work unchanged:
//!
//! ```text
//! <log_type> <#log_args> <log_args...> <#mirrors> <dev> <offset> [<dev> <offset>...]
//!     [<#features> <feature>...]
//! ```
//!
//! Arguments are separated by ASCII whitespace. Log types:
//!
//! | log type  | #log_args | log_args                              |
//! |-----------|-----------|---------------------------------------|
//! | `core`    | 1 or 2    | `<region_size> [sync\|nosync]`          |
//! | `disk`    | 2 or 3    | `<log_dev> <region_size> [sync\|nosync]`|
//! | `dmirror` | 1 or 2    | `<region_size> [sync\|nosync]`          |
//!
//! `core` keeps the write-intent log in memory only (a restart resyncs everything unless
//! `nosync`); `disk` keeps it on a separate log device; `dmirror` is dmirror's own self-describing
//! log: superblocks and bitmaps at the end of every leg (docs/FORMAT.md), the same format as the
//! GEOM class and the CLI. For `dmirror` a region size of `0` means "the default for this size"
//! (see [`MirrorTable::effective_region_sectors`]). `sync` forces a full resync at activation,
//! `nosync` declares the legs already identical, neither leaves it to the log.
//!
//! Sizes and offsets are in 512-byte sectors, as everywhere in device-mapper. Bounds:
//! - region size: a power of two from [`MIN_REGION_SECTORS`] (8 sectors, 4 KiB: one page, below
//!   which a region cannot be written without read-modify-write on 4K-sector disks) to
//!   [`MAX_REGION_SECTORS`] (2^31 sectors, 1 TiB: the largest power of two Linux's 32-bit
//!   region size field holds, so any table lvm2 can produce fits);
//! - `#mirrors`: 1 to [`MAX_LEGS`] (32). One is allowed: a mirror started degraded, waiting for
//!   its second leg. (lvm2's status parser reads at most 8 legs, so lvm2 itself stays below.)
//! - offsets: any `u64`; [`check_devices`] checks them against the devices;
//! - each argument at most [`MAX_ARG_BYTES`] bytes, the whole string at most [`MAX_TABLE_BYTES`];
//!   control characters (other than the ASCII whitespace separators) are refused.
//!
//! Features: `handle_errors` (fail a leg on I/O errors instead of ignoring them) and `keep_log`
//! (which, as in Linux, requires `handle_errors`). Each may be given once.
//!
//! The same device string may not appear twice (as two legs, or as a leg and the disk log).
//! Two different strings may still name the same device (a path and its `major:minor`): the
//! shim, which opens the devices, must compare what it opened.

use core::fmt::{self, Write};

use crate::{LegState, Status, MAX_LEGS};

/// Longest parameter string [`parse`] accepts, in bytes.
pub const MAX_TABLE_BYTES: usize = 4096;
/// Longest single argument (device path, number, word), in bytes.
pub const MAX_ARG_BYTES: usize = 255;
/// Smallest region size, in 512-byte sectors (4 KiB).
pub const MIN_REGION_SECTORS: u64 = 8;
/// Largest region size, in 512-byte sectors (1 TiB).
pub const MAX_REGION_SECTORS: u64 = 1 << 31;
/// How many bytes of an offending word a [`TableError`] keeps to name it.
pub const WORD_BYTES: usize = 32;

/// What the table says about the initial synchronisation of the legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Neither `sync` nor `nosync`: the log decides (its saved state, or a full resync).
    Default,
    /// `sync`: resynchronise everything at activation.
    Sync,
    /// `nosync`: the legs are declared identical; no initial resync.
    NoSync,
}

impl Sync {
    /// The table word, if any.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Sync::Default => None,
            Sync::Sync => Some("sync"),
            Sync::NoSync => Some("nosync"),
        }
    }
}

/// The three log types, for error messages and for the C side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogType {
    Core,
    Disk,
    Dmirror,
}

impl LogType {
    /// The table word.
    pub fn name(self) -> &'static str {
        match self {
            LogType::Core => "core",
            LogType::Disk => "disk",
            LogType::Dmirror => "dmirror",
        }
    }

    /// Fewest and most `#log_args` this log type takes.
    pub fn arg_range(self) -> (u64, u64) {
        match self {
            LogType::Core | LogType::Dmirror => (1, 2),
            LogType::Disk => (2, 3),
        }
    }

    fn from_word(word: &str) -> Option<LogType> {
        match word {
            "core" => Some(LogType::Core),
            "disk" => Some(LogType::Disk),
            "dmirror" => Some(LogType::Dmirror),
            _ => None,
        }
    }
}

/// The log part of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSpec<'t> {
    /// `core <region_size> [sync|nosync]`
    Core { region_sectors: u64, sync: Sync },
    /// `disk <log_dev> <region_size> [sync|nosync]`
    Disk {
        dev: &'t str,
        region_sectors: u64,
        sync: Sync,
    },
    /// `dmirror <region_size|0> [sync|nosync]`; 0 means the default region size.
    Dmirror { region_sectors: u64, sync: Sync },
}

impl LogSpec<'_> {
    pub fn log_type(&self) -> LogType {
        match self {
            LogSpec::Core { .. } => LogType::Core,
            LogSpec::Disk { .. } => LogType::Disk,
            LogSpec::Dmirror { .. } => LogType::Dmirror,
        }
    }

    /// The region size as written in the table (0 only for `dmirror`, meaning the default).
    pub fn region_sectors(&self) -> u64 {
        match *self {
            LogSpec::Core { region_sectors, .. }
            | LogSpec::Disk { region_sectors, .. }
            | LogSpec::Dmirror { region_sectors, .. } => region_sectors,
        }
    }

    pub fn sync(&self) -> Sync {
        match *self {
            LogSpec::Core { sync, .. }
            | LogSpec::Disk { sync, .. }
            | LogSpec::Dmirror { sync, .. } => sync,
        }
    }
}

/// One leg: a device (path or `major:minor`, as the table wrote it) and the sector it starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegSpec<'t> {
    pub dev: &'t str,
    pub offset: u64,
}

impl LegSpec<'_> {
    /// The filler for unused slots of [`MirrorTable::legs`].
    pub const UNUSED: LegSpec<'static> = LegSpec { dev: "", offset: 0 };
}

/// A parsed mirror table. Borrowed strings point into the parameter string.
///
/// `legs[nlegs..]` are [`LegSpec::UNUSED`], so two tables are equal exactly when they say the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorTable<'t> {
    pub log: LogSpec<'t>,
    /// 1..=32.
    pub nlegs: u8,
    pub legs: [LegSpec<'t>; MAX_LEGS],
    pub handle_errors: bool,
    pub keep_log: bool,
}

impl<'t> MirrorTable<'t> {
    /// The legs in use (`legs[..nlegs]`).
    pub fn used_legs(&self) -> &[LegSpec<'t>] {
        self.legs
            .get(..usize::from(self.nlegs))
            .unwrap_or(&self.legs)
    }

    /// The region size to run with for a target of `target_sectors`: the table's, or for a
    /// `dmirror` log with region size 0, [`crate::format::default_region_sectors`].
    pub fn effective_region_sectors(&self, target_sectors: u64) -> u64 {
        match self.log {
            LogSpec::Dmirror {
                region_sectors: 0, ..
            } => crate::format::default_region_sectors(target_sectors, 512),
            log => log.region_sectors(),
        }
    }
}

/// A feature word, for [`TableError::DuplicateFeature`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    HandleErrors,
    KeepLog,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::HandleErrors => "handle_errors",
            Feature::KeepLog => "keep_log",
        }
    }
}

/// Which numeric field of the table an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    LogArgCount,
    RegionSize,
    MirrorCount,
    /// The offset of leg `leg` (0-based).
    Offset {
        leg: u8,
    },
    FeatureCount,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::LogArgCount => f.write_str("#log_args"),
            Field::RegionSize => f.write_str("region size"),
            Field::MirrorCount => f.write_str("#mirrors"),
            Field::Offset { leg } => write!(f, "offset of leg {leg}"),
            Field::FeatureCount => f.write_str("#features"),
        }
    }
}

/// A copy of (the start of) an offending table word, so a [`TableError`] does not borrow the
/// table. Keeps at most [`WORD_BYTES`] bytes, cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Word {
    bytes: [u8; WORD_BYTES],
    len: u8,
    truncated: bool,
}

impl Word {
    pub fn new(s: &str) -> Word {
        let mut cut = s.len().min(WORD_BYTES);
        while cut > 0 && !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut bytes = [0u8; WORD_BYTES];
        let src = s.as_bytes().get(..cut).unwrap_or(&[]);
        for (d, s) in bytes.iter_mut().zip(src) {
            *d = *s;
        }
        Word {
            bytes,
            len: cut as u8,
            truncated: cut < s.len(),
        }
    }

    /// The kept part of the word.
    pub fn as_str(&self) -> &str {
        let kept = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        core::str::from_utf8(kept).unwrap_or("")
    }

    /// Whether the word was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Word({:?}{})",
            self.as_str(),
            if self.truncated { "..." } else { "" }
        )
    }
}

/// Why a table was refused. Every variant's [`fmt::Display`] is one line naming the problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No arguments at all.
    Empty,
    /// The parameter string is longer than [`MAX_TABLE_BYTES`].
    TableTooLong {
        len: usize,
    },
    /// Argument number `index` (1-based) is longer than [`MAX_ARG_BYTES`].
    ArgumentTooLong {
        index: usize,
        len: usize,
    },
    /// The bytes handed to [`parse_bytes`] are not UTF-8 (first bad byte at `offset`).
    NotUtf8 {
        offset: usize,
    },
    /// A control character (not a whitespace separator) at byte `offset`.
    ControlCharacter {
        offset: usize,
    },
    /// The first word is not `core`, `disk` or `dmirror`.
    UnknownLogType(Word),
    /// The table ends where this field was expected.
    Missing(Field),
    /// `#log_args` is outside the range the log type takes.
    LogArgCount {
        log: LogType,
        count: u64,
    },
    /// The table ends before the `#log_args` log arguments.
    MissingLogArgs {
        log: LogType,
        expected: u8,
        got: u8,
    },
    /// A field that must be a decimal `u64` is not one.
    BadNumber {
        field: Field,
        word: Word,
    },
    /// The optional log argument is not `sync` or `nosync`.
    UnknownLogArg {
        log: LogType,
        word: Word,
    },
    RegionNotPowerOfTwo(u64),
    RegionTooSmall(u64),
    RegionTooLarge(u64),
    /// `#mirrors` is 0 or more than [`MAX_LEGS`].
    MirrorCount(u64),
    /// Fewer complete `<dev> <offset>` pairs than `#mirrors`.
    MissingLegs {
        expected: u8,
        got: u8,
    },
    /// The same device string appears twice.
    DuplicateDevice(Word),
    /// `#features` is more than the arguments that follow.
    FeatureCount {
        count: u64,
        available: usize,
    },
    UnknownFeature(Word),
    DuplicateFeature(Feature),
    KeepLogWithoutHandleErrors,
    /// Argument number `index` (1-based) follows a complete table.
    TrailingGarbage {
        index: usize,
        word: Word,
    },
    // The following come from `check_devices`.
    /// The target has length 0.
    EmptyTarget,
    /// The host gave `got` device sizes for a table of `expected` legs.
    DeviceCount {
        expected: u8,
        got: usize,
    },
    /// A leg's offset is at or beyond the end of its device.
    OffsetBeyondDevice {
        leg: u8,
        dev: Word,
        offset: u64,
        dev_sectors: u64,
    },
    /// A leg's device cannot hold offset + target length (+ metadata for the `dmirror` log).
    /// `need` is `u64::MAX` when the sum does not fit in 64 bits.
    DeviceTooSmall {
        leg: u8,
        dev: Word,
        need: u64,
        dev_sectors: u64,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Empty => f.write_str("empty mirror table"),
            TableError::TableTooLong { len } => write!(
                f,
                "mirror table is {len} bytes long; at most {MAX_TABLE_BYTES} are accepted"
            ),
            TableError::ArgumentTooLong { index, len } => write!(
                f,
                "argument {index} is {len} bytes long; at most {MAX_ARG_BYTES} are accepted"
            ),
            TableError::NotUtf8 { offset } => {
                write!(f, "mirror table is not valid UTF-8 (byte {offset})")
            }
            TableError::ControlCharacter { offset } => {
                write!(f, "mirror table has a control character at byte {offset}")
            }
            TableError::UnknownLogType(w) => {
                write!(f, "unknown log type '{w}' (expected core, disk or dmirror)")
            }
            TableError::Missing(field) => write!(f, "mirror table ends where {field} was expected"),
            TableError::LogArgCount { log, count } => {
                let (lo, hi) = log.arg_range();
                write!(f, "log type {} takes {lo} or {hi} arguments, not {count}", log.name())
            }
            TableError::MissingLogArgs { log, expected, got } => write!(
                f,
                "log type {} announces {expected} arguments but the table has only {got}",
                log.name()
            ),
            TableError::BadNumber { field, word } => {
                write!(f, "{field} '{word}' is not a decimal number below 2^64")?;
                if *field == Field::FeatureCount {
                    // What follows the last leg is #features: extra legs end up here.
                    f.write_str(" (more device/offset pairs than #mirrors?)")?;
                }
                Ok(())
            }
            TableError::UnknownLogArg { log, word } => write!(
                f,
                "unknown argument '{word}' for log type {} (expected sync or nosync)",
                log.name()
            ),
            TableError::RegionNotPowerOfTwo(r) => {
                write!(f, "region size {r} is not a power of two")
            }
            TableError::RegionTooSmall(r) => write!(
                f,
                "region size {r} is too small (at least {MIN_REGION_SECTORS} sectors, 4 KiB)"
            ),
            TableError::RegionTooLarge(r) => write!(
                f,
                "region size {r} is too large (at most {MAX_REGION_SECTORS} sectors, 1 TiB)"
            ),
            TableError::MirrorCount(n) => {
                write!(f, "#mirrors {n} is out of range (1 to {MAX_LEGS})")
            }
            TableError::MissingLegs { expected, got } => write!(
                f,
                "#mirrors is {expected} but the table has {got} complete device/offset pairs"
            ),
            TableError::DuplicateDevice(w) => write!(f, "device '{w}' appears more than once"),
            TableError::FeatureCount { count, available } => write!(
                f,
                "#features is {count} but only {available} arguments follow"
            ),
            TableError::UnknownFeature(w) => {
                write!(f, "unknown feature '{w}' (expected handle_errors or keep_log)")
            }
            TableError::DuplicateFeature(feat) => {
                write!(f, "feature {} is given more than once", feat.name())
            }
            TableError::KeepLogWithoutHandleErrors => {
                f.write_str("feature keep_log requires feature handle_errors")
            }
            TableError::TrailingGarbage { index, word } => write!(
                f,
                "unexpected argument {index} '{word}' after the end of the table"
            ),
            TableError::EmptyTarget => f.write_str("target length is 0 sectors"),
            TableError::DeviceCount { expected, got } => write!(
                f,
                "internal error: {got} device sizes given for {expected} legs"
            ),
            TableError::OffsetBeyondDevice { leg, dev, offset, dev_sectors } => write!(
                f,
                "offset {offset} of leg {leg} is beyond the end of device '{dev}' ({dev_sectors} sectors)"
            ),
            TableError::DeviceTooSmall { leg, dev, need, dev_sectors } => {
                if *need == u64::MAX {
                    write!(
                        f,
                        "device '{dev}' of leg {leg} has {dev_sectors} sectors but offset, length and metadata need 2^64 sectors or more"
                    )
                } else {
                    write!(
                        f,
                        "device '{dev}' of leg {leg} has {dev_sectors} sectors but {need} are needed"
                    )
                }
            }
        }
    }
}

impl TableError {
    /// Write the message into `out` for C: see [`write_message`].
    pub fn message(&self, out: &mut [u8]) -> usize {
        write_message(self, out)
    }
}

/// Write `err`'s one-line message into `out`, truncated (at a character boundary) to fit and
/// NUL-terminated when `out` is not empty. Returns the message bytes written, NUL excluded.
pub fn write_message(err: &TableError, out: &mut [u8]) -> usize {
    let mut w = BufWriter::new(out);
    // A truncated message is still a useful message; the truncation itself is not an error here.
    let _ = write!(w, "{err}");
    w.len()
}

/// A `fmt::Write` sink over a byte buffer, for C callers. It keeps one byte for a terminating
/// NUL, so it holds at most `buf.len() - 1` bytes and the buffer is always a C string (when it
/// is not empty). Output that does not fit is cut at a character boundary, the writer remembers
/// it ([`BufWriter::truncated`]) and the write reports `fmt::Error`, which stops formatting.
pub struct BufWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    truncated: bool,
}

impl<'b> BufWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> BufWriter<'b> {
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        BufWriter {
            buf,
            len: 0,
            truncated: false,
        }
    }

    /// Bytes written so far, NUL excluded.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether some output did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The bytes written so far, NUL excluded.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Err(fmt::Error);
        }
        let room = self.buf.len().saturating_sub(1).saturating_sub(self.len);
        let mut n = s.len().min(room);
        while n > 0 && !s.is_char_boundary(n) {
            n -= 1;
        }
        let end = self.len.saturating_add(n);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..end), s.as_bytes().get(..n)) {
            // Element by element: `copy_from_slice` keeps a length-mismatch panic path in a
            // kernel object even where the lengths are equal.
            for (d, c) in dst.iter_mut().zip(src) {
                *d = *c;
            }
            self.len = end;
        }
        if let Some(nul) = self.buf.get_mut(self.len) {
            *nul = 0;
        }
        if n < s.len() {
            self.truncated = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// The arguments of a table, with the per-argument length check.
struct Args<'t> {
    it: core::str::SplitAsciiWhitespace<'t>,
    /// 1-based number of the last argument returned.
    index: usize,
}

impl<'t> Args<'t> {
    fn next(&mut self) -> Result<Option<&'t str>, TableError> {
        match self.it.next() {
            None => Ok(None),
            Some(arg) => {
                self.index = self.index.saturating_add(1);
                if arg.len() > MAX_ARG_BYTES {
                    Err(TableError::ArgumentTooLong {
                        index: self.index,
                        len: arg.len(),
                    })
                } else {
                    Ok(Some(arg))
                }
            }
        }
    }

    fn remaining(&self) -> usize {
        self.it.clone().count()
    }
}

/// A decimal `u64`: ASCII digits only (no sign, no spaces, no radix prefix).
fn parse_u64(word: &str, field: Field) -> Result<u64, TableError> {
    let bad = || TableError::BadNumber {
        field,
        word: Word::new(word),
    };
    if word.is_empty() {
        return Err(bad());
    }
    let mut v: u64 = 0;
    for b in word.bytes() {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(v)
}

fn parse_region(word: &str, zero_means_default: bool) -> Result<u64, TableError> {
    let r = parse_u64(word, Field::RegionSize)?;
    if r == 0 && zero_means_default {
        return Ok(0);
    }
    if r < MIN_REGION_SECTORS {
        Err(TableError::RegionTooSmall(r))
    } else if r > MAX_REGION_SECTORS {
        Err(TableError::RegionTooLarge(r))
    } else if !r.is_power_of_two() {
        Err(TableError::RegionNotPowerOfTwo(r))
    } else {
        Ok(r)
    }
}

fn parse_sync(word: Option<&str>, log: LogType) -> Result<Sync, TableError> {
    match word {
        None => Ok(Sync::Default),
        Some("sync") => Ok(Sync::Sync),
        Some("nosync") => Ok(Sync::NoSync),
        Some(w) => Err(TableError::UnknownLogArg {
            log,
            word: Word::new(w),
        }),
    }
}

/// Parse a table's parameter string (everything after `<start> <length> mirror`).
pub fn parse(params: &str) -> Result<MirrorTable<'_>, TableError> {
    if params.len() > MAX_TABLE_BYTES {
        return Err(TableError::TableTooLong { len: params.len() });
    }
    if let Some(offset) = params
        .bytes()
        .position(|b| (b < 0x20 && !b.is_ascii_whitespace()) || b == 0x7f)
    {
        return Err(TableError::ControlCharacter { offset });
    }
    let mut args = Args {
        it: params.split_ascii_whitespace(),
        index: 0,
    };

    // The log.
    let log_word = args.next()?.ok_or(TableError::Empty)?;
    let log_type =
        LogType::from_word(log_word).ok_or(TableError::UnknownLogType(Word::new(log_word)))?;
    let nargs_word = args
        .next()?
        .ok_or(TableError::Missing(Field::LogArgCount))?;
    let nargs = parse_u64(nargs_word, Field::LogArgCount)?;
    let (lo, hi) = log_type.arg_range();
    if nargs < lo || nargs > hi {
        return Err(TableError::LogArgCount {
            log: log_type,
            count: nargs,
        });
    }
    let mut log_args: [Option<&str>; 3] = [None; 3];
    for (got, slot) in (0u8..).zip(log_args.iter_mut().take(nargs as usize)) {
        *slot = Some(args.next()?.ok_or(TableError::MissingLogArgs {
            log: log_type,
            expected: nargs as u8,
            got,
        })?);
    }
    let [a0, a1, a2] = log_args;
    let log = match log_type {
        LogType::Core => LogSpec::Core {
            region_sectors: parse_region(a0.unwrap_or(""), false)?,
            sync: parse_sync(a1, log_type)?,
        },
        LogType::Disk => LogSpec::Disk {
            dev: a0.unwrap_or(""),
            region_sectors: parse_region(a1.unwrap_or(""), false)?,
            sync: parse_sync(a2, log_type)?,
        },
        LogType::Dmirror => LogSpec::Dmirror {
            region_sectors: parse_region(a0.unwrap_or(""), true)?,
            sync: parse_sync(a1, log_type)?,
        },
    };

    // The legs.
    let nlegs_word = args
        .next()?
        .ok_or(TableError::Missing(Field::MirrorCount))?;
    let nlegs = parse_u64(nlegs_word, Field::MirrorCount)?;
    if nlegs == 0 || nlegs > MAX_LEGS as u64 {
        return Err(TableError::MirrorCount(nlegs));
    }
    let nlegs = nlegs as u8;
    let mut legs = [LegSpec::UNUSED; MAX_LEGS];
    for i in 0..nlegs {
        let missing = TableError::MissingLegs {
            expected: nlegs,
            got: i,
        };
        let dev = args.next()?.ok_or(missing)?;
        let offset_word = args.next()?.ok_or(missing)?;
        let offset = parse_u64(offset_word, Field::Offset { leg: i })?;
        let earlier = legs.get(..usize::from(i)).unwrap_or(&[]);
        let log_dev = match log {
            LogSpec::Disk { dev, .. } => Some(dev),
            _ => None,
        };
        if earlier.iter().any(|l| l.dev == dev) || log_dev == Some(dev) {
            return Err(TableError::DuplicateDevice(Word::new(dev)));
        }
        if let Some(slot) = legs.get_mut(usize::from(i)) {
            *slot = LegSpec { dev, offset };
        }
    }

    // The features.
    let mut handle_errors = false;
    let mut keep_log = false;
    if let Some(nf_word) = args.next()? {
        let nf = parse_u64(nf_word, Field::FeatureCount)?;
        let available = args.remaining();
        if nf > available as u64 {
            return Err(TableError::FeatureCount {
                count: nf,
                available,
            });
        }
        for _ in 0..nf {
            let word = args.next()?.unwrap_or("");
            let (flag, feature) = match word {
                "handle_errors" => (&mut handle_errors, Feature::HandleErrors),
                "keep_log" => (&mut keep_log, Feature::KeepLog),
                _ => return Err(TableError::UnknownFeature(Word::new(word))),
            };
            if *flag {
                return Err(TableError::DuplicateFeature(feature));
            }
            *flag = true;
        }
        if keep_log && !handle_errors {
            return Err(TableError::KeepLogWithoutHandleErrors);
        }
    }
    if let Some(extra) = args.next()? {
        return Err(TableError::TrailingGarbage {
            index: args.index,
            word: Word::new(extra),
        });
    }
    Ok(MirrorTable {
        log,
        nlegs,
        legs,
        handle_errors,
        keep_log,
    })
}

/// [`parse`] for a (pointer, length) from C: the bytes must be UTF-8.
pub fn parse_bytes(params: &[u8]) -> Result<MirrorTable<'_>, TableError> {
    if params.len() > MAX_TABLE_BYTES {
        return Err(TableError::TableTooLong { len: params.len() });
    }
    match core::str::from_utf8(params) {
        Ok(s) => parse(s),
        Err(e) => Err(TableError::NotUtf8 {
            offset: e.valid_up_to(),
        }),
    }
}

/// Check a parsed table against the devices the shim opened.
///
/// `dev_sectors[i]` is the size of leg `i`'s device in 512-byte sectors (exactly `nlegs` of
/// them). Every leg must hold `offset + target_sectors`, plus `meta_sectors` when the log is
/// `dmirror` (the metadata area at the end of every leg; the caller computes it from the
/// metadata layout for the effective region size — it is ignored for `core` and `disk`). A
/// `disk` log device's size is the business of whoever reads that log's format.
pub fn check_devices(
    table: &MirrorTable<'_>,
    target_sectors: u64,
    dev_sectors: &[u64],
    meta_sectors: u64,
) -> Result<(), TableError> {
    if target_sectors == 0 {
        return Err(TableError::EmptyTarget);
    }
    let legs = table.used_legs();
    if dev_sectors.len() != legs.len() || legs.len() != usize::from(table.nlegs) {
        return Err(TableError::DeviceCount {
            expected: table.nlegs,
            got: dev_sectors.len(),
        });
    }
    let meta = match table.log {
        LogSpec::Dmirror { .. } => meta_sectors,
        LogSpec::Core { .. } | LogSpec::Disk { .. } => 0,
    };
    for (i, (leg, &size)) in legs.iter().zip(dev_sectors).enumerate() {
        let leg_no = i as u8;
        if leg.offset >= size {
            return Err(TableError::OffsetBeyondDevice {
                leg: leg_no,
                dev: Word::new(leg.dev),
                offset: leg.offset,
                dev_sectors: size,
            });
        }
        let need = leg
            .offset
            .checked_add(target_sectors)
            .and_then(|n| n.checked_add(meta));
        if need.is_none_or(|need| need > size) {
            return Err(TableError::DeviceTooSmall {
                leg: leg_no,
                dev: Word::new(leg.dev),
                need: need.unwrap_or(u64::MAX),
                dev_sectors: size,
            });
        }
    }
    Ok(())
}

/// Print the table in canonical form (what `dmsetup table` shows after `<start> <length>
/// mirror`): single spaces, `#log_args` counting exactly the arguments printed, no `#features`
/// when there are none, `handle_errors` before `keep_log`. Devices are printed as the table
/// holds them; a shim that wants `major:minor` puts those strings in a copy of the table first.
/// Parsing the output gives back an equal table.
pub fn format_table<W: Write + ?Sized>(table: &MirrorTable<'_>, out: &mut W) -> fmt::Result {
    let sync = table.log.sync();
    let extra = u8::from(sync.word().is_some());
    match table.log {
        LogSpec::Core { region_sectors, .. } => write!(out, "core {} {region_sectors}", 1 + extra)?,
        LogSpec::Disk {
            dev,
            region_sectors,
            ..
        } => write!(out, "disk {} {dev} {region_sectors}", 2 + extra)?,
        LogSpec::Dmirror { region_sectors, .. } => {
            write!(out, "dmirror {} {region_sectors}", 1 + extra)?
        }
    }
    if let Some(word) = sync.word() {
        write!(out, " {word}")?;
    }
    write!(out, " {}", table.nlegs)?;
    for leg in table.used_legs() {
        write!(out, " {} {}", leg.dev, leg.offset)?;
    }
    let nfeatures = u8::from(table.handle_errors) + u8::from(table.keep_log);
    if nfeatures > 0 {
        write!(out, " {nfeatures}")?;
        if table.handle_errors {
            out.write_str(" handle_errors")?;
        }
        if table.keep_log {
            out.write_str(" keep_log")?;
        }
    }
    Ok(())
}

/// Health of a `disk` log device, for its status character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogHealth {
    /// `A`
    Alive,
    /// `D`: a log write failed.
    Failed,
    /// `F`: a log flush failed.
    FlushFailed,
}

impl LogHealth {
    pub fn char(self) -> char {
        match self {
            LogHealth::Alive => 'A',
            LogHealth::Failed => 'D',
            LogHealth::FlushFailed => 'F',
        }
    }
}

/// The dm-mirror health character of a leg in this state.
///
/// lvm2's dmeventd treats any character other than `A` as a failed leg and starts a repair
/// (removing the leg), so only legs that really are out of service are non-`A`:
/// - `InSync` → `A`;
/// - `Rebuilding` → `A`: the leg is healthy and being filled; the progress shows in the
///   `in_sync/total` count, as with Linux during a resync;
/// - `Failed` → `D`: the core took it out after an I/O error and it will not be trusted again
///   without a full resync, which is what `D` (write failure, leg out of sync) tells lvm2;
/// - `Missing` → `D`: the device is gone; writes go on without it, so it is out of sync too;
/// - `Empty` → `D`: no device at all.
///
/// dmirror never reports `S`, `R`, `F` or `U`: a read error the core repaired leaves the leg
/// in sync (`A`); any error that takes the leg out of service is `D`.
pub fn leg_health(state: LegState) -> char {
    match state {
        LegState::InSync | LegState::Rebuilding => 'A',
        LegState::Failed | LegState::Missing | LegState::Empty => 'D',
    }
}

/// Print `dmsetup status` for the mirror (after `<start> <length> mirror`), in Linux dm-mirror's
/// format, which lvm2 (libdevmapper's mirror status parser, dmeventd) reads:
///
/// ```text
/// <#mirrors> <dev>... <in_sync>/<total> 1 <health chars> <log status>
/// ```
///
/// - `<dev>`: `dev_names[i]` for leg `i` if given, else the device string of the table.
///   libdevmapper parses these as `major:minor`, so the shim should pass those.
/// - `<in_sync>/<total>`: `status.regions_in_sync` (clamped to the total) and `status.regions`.
/// - one health character per leg of the table, from `status.leg[i].state` by [`leg_health`].
/// - `<log status>`: `1 core` for `core`; `3 disk <logdev> <A|D|F>` for `disk`, the device
///   being `dev_names[nlegs]` if given (else the table's) and the character `log_health`;
///   `1 dmirror` for `dmirror`: the metadata lives on the legs, so its health is theirs (a leg
///   whose metadata cannot be written is failed and shows `D`). libdevmapper reads a
///   one-argument log status as the log type name, exactly as for `core`.
///
/// `log_health` is ignored for `core` and `dmirror`.
pub fn format_status<W: Write + ?Sized>(
    status: &Status,
    table: &MirrorTable<'_>,
    dev_names: &[&str],
    log_health: LogHealth,
    out: &mut W,
) -> fmt::Result {
    let legs = table.used_legs();
    write!(out, "{}", legs.len())?;
    for (i, leg) in legs.iter().enumerate() {
        let name = dev_names.get(i).copied().unwrap_or(leg.dev);
        write!(out, " {name}")?;
    }
    write!(
        out,
        " {}/{} 1 ",
        status.regions_in_sync.min(status.regions),
        status.regions
    )?;
    for i in 0..legs.len() {
        let state = status.leg.get(i).map_or(LegState::Empty, |l| l.state);
        out.write_char(leg_health(state))?;
    }
    match table.log {
        LogSpec::Core { .. } => out.write_str(" 1 core"),
        LogSpec::Disk { dev, .. } => {
            let name = dev_names.get(legs.len()).copied().unwrap_or(dev);
            write!(out, " 3 disk {name} {}", log_health.char())
        }
        LogSpec::Dmirror { .. } => out.write_str(" 1 dmirror"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counters, LegStatus, ReadPolicy};
    use std::collections::BTreeSet;
    use std::format;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn table_string(t: &MirrorTable<'_>) -> String {
        let mut s = String::new();
        format_table(t, &mut s).unwrap();
        s
    }

    fn msg(e: &TableError) -> String {
        e.to_string()
    }

    fn legs<'t>(pairs: &[(&'t str, u64)]) -> [LegSpec<'t>; MAX_LEGS] {
        let mut legs = [LegSpec::UNUSED; MAX_LEGS];
        for (slot, &(dev, offset)) in legs.iter_mut().zip(pairs) {
            *slot = LegSpec { dev, offset };
        }
        legs
    }

    #[test]
    fn lvm2_core_table() {
        let t = parse("core 2 1024 nosync 2 /dev/vn0 0 /dev/vn1 0 1 handle_errors").unwrap();
        assert_eq!(
            t,
            MirrorTable {
                log: LogSpec::Core {
                    region_sectors: 1024,
                    sync: Sync::NoSync
                },
                nlegs: 2,
                legs: legs(&[("/dev/vn0", 0), ("/dev/vn1", 0)]),
                handle_errors: true,
                keep_log: false,
            }
        );
        assert_eq!(t.used_legs().len(), 2);
        assert_eq!(
            table_string(&t),
            "core 2 1024 nosync 2 /dev/vn0 0 /dev/vn1 0 1 handle_errors"
        );
    }

    #[test]
    fn lvm2_disk_table() {
        let t =
            parse("disk 2 /dev/mapper/vg-lv_mlog 1024 2 253:1 0 253:2 0 1 handle_errors").unwrap();
        assert_eq!(
            t.log,
            LogSpec::Disk {
                dev: "/dev/mapper/vg-lv_mlog",
                region_sectors: 1024,
                sync: Sync::Default
            }
        );
        assert_eq!(
            t.used_legs(),
            &[
                LegSpec {
                    dev: "253:1",
                    offset: 0
                },
                LegSpec {
                    dev: "253:2",
                    offset: 0
                }
            ]
        );
        assert!(t.handle_errors && !t.keep_log);
        assert_eq!(
            table_string(&t),
            "disk 2 /dev/mapper/vg-lv_mlog 1024 2 253:1 0 253:2 0 1 handle_errors"
        );
    }

    #[test]
    fn other_valid_tables() {
        // Linux's minimal form: no features at all, offsets, three legs, tabs and newlines.
        let t =
            parse("  core\t1 1024\n3 /dev/a 0 /dev/b 2048 /dev/c 18446744073709551615 ").unwrap();
        assert_eq!(t.nlegs, 3);
        assert_eq!(
            t.log,
            LogSpec::Core {
                region_sectors: 1024,
                sync: Sync::Default
            }
        );
        assert_eq!(
            t.legs[2],
            LegSpec {
                dev: "/dev/c",
                offset: u64::MAX
            }
        );
        assert_eq!(t.legs[3], LegSpec::UNUSED);
        assert!(!t.handle_errors);
        assert_eq!(
            table_string(&t),
            "core 1 1024 3 /dev/a 0 /dev/b 2048 /dev/c 18446744073709551615"
        );

        let t = parse("disk 3 253:0 8 sync 2 253:1 0 253:2 0 2 keep_log handle_errors").unwrap();
        assert_eq!(
            t.log,
            LogSpec::Disk {
                dev: "253:0",
                region_sectors: 8,
                sync: Sync::Sync
            }
        );
        assert!(t.handle_errors && t.keep_log);
        assert_eq!(
            table_string(&t),
            "disk 3 253:0 8 sync 2 253:1 0 253:2 0 2 handle_errors keep_log"
        );

        let t = parse("dmirror 1 0 2 /dev/da1 0 /dev/da2 0").unwrap();
        assert_eq!(
            t.log,
            LogSpec::Dmirror {
                region_sectors: 0,
                sync: Sync::Default
            }
        );
        assert_eq!(t.effective_region_sectors(1 << 20), 1024);
        assert_eq!(t.effective_region_sectors(1 << 40), 1 << 20);
        let t = parse("dmirror 2 2147483648 nosync 1 /dev/da1 0 0").unwrap();
        assert_eq!(
            t.log,
            LogSpec::Dmirror {
                region_sectors: 1 << 31,
                sync: Sync::NoSync
            }
        );
        assert_eq!(t.effective_region_sectors(1 << 20), 1 << 31);
        assert!(!t.handle_errors);
        assert_eq!(table_string(&t), "dmirror 2 2147483648 nosync 1 /dev/da1 0");

        // 32 legs, leading zeros.
        let mut s = String::from("core 1 0016 32");
        for i in 0..32 {
            s.push_str(&format!(" /dev/d{i} {i}"));
        }
        let t = parse(&s).unwrap();
        assert_eq!(t.nlegs, 32);
        assert_eq!(t.log.region_sectors(), 16);
        assert_eq!(
            t.legs[31],
            LegSpec {
                dev: "/dev/d31",
                offset: 31
            }
        );
        assert_eq!(parse(&table_string(&t)).unwrap(), t);

        // Longest accepted argument and table.
        let long = "d".repeat(MAX_ARG_BYTES);
        let s = format!("core 1 1024 1 {long} 0");
        assert_eq!(parse(&s).unwrap().legs[0].dev, long.as_str());
        let pad = " ".repeat(MAX_TABLE_BYTES - s.len());
        assert!(parse(&format!("{s}{pad}")).is_ok());
        assert!(parse_bytes(format!("{s}{pad}").as_bytes()).is_ok());
    }

    /// Every `TableError` variant, exhaustively: adding a variant breaks this until a test
    /// reaches it.
    fn variant(e: &TableError) -> &'static str {
        match e {
            TableError::Empty => "Empty",
            TableError::TableTooLong { .. } => "TableTooLong",
            TableError::ArgumentTooLong { .. } => "ArgumentTooLong",
            TableError::NotUtf8 { .. } => "NotUtf8",
            TableError::ControlCharacter { .. } => "ControlCharacter",
            TableError::UnknownLogType(_) => "UnknownLogType",
            TableError::Missing(_) => "Missing",
            TableError::LogArgCount { .. } => "LogArgCount",
            TableError::MissingLogArgs { .. } => "MissingLogArgs",
            TableError::BadNumber { .. } => "BadNumber",
            TableError::UnknownLogArg { .. } => "UnknownLogArg",
            TableError::RegionNotPowerOfTwo(_) => "RegionNotPowerOfTwo",
            TableError::RegionTooSmall(_) => "RegionTooSmall",
            TableError::RegionTooLarge(_) => "RegionTooLarge",
            TableError::MirrorCount(_) => "MirrorCount",
            TableError::MissingLegs { .. } => "MissingLegs",
            TableError::DuplicateDevice(_) => "DuplicateDevice",
            TableError::FeatureCount { .. } => "FeatureCount",
            TableError::UnknownFeature(_) => "UnknownFeature",
            TableError::DuplicateFeature(_) => "DuplicateFeature",
            TableError::KeepLogWithoutHandleErrors => "KeepLogWithoutHandleErrors",
            TableError::TrailingGarbage { .. } => "TrailingGarbage",
            TableError::EmptyTarget => "EmptyTarget",
            TableError::DeviceCount { .. } => "DeviceCount",
            TableError::OffsetBeyondDevice { .. } => "OffsetBeyondDevice",
            TableError::DeviceTooSmall { .. } => "DeviceTooSmall",
        }
    }
    const VARIANTS: usize = 26;

    fn w(s: &str) -> Word {
        Word::new(s)
    }

    /// (table, error, message) for every parse error.
    fn bad_tables() -> Vec<(String, TableError, &'static str)> {
        use TableError as E;
        let long = "x".repeat(256);
        let v: Vec<(String, TableError, &'static str)> = std::vec![
            ("".into(), E::Empty, "empty mirror table"),
            (" \t\n ".into(), E::Empty, "empty mirror table"),
            (
                format!("core 1 1024 1 /dev/a 0{}", " ".repeat(4080)),
                E::TableTooLong { len: 4102 },
                "mirror table is 4102 bytes long; at most 4096 are accepted",
            ),
            (
                format!("core 1 1024 1 {long} 0"),
                E::ArgumentTooLong { index: 5, len: 256 },
                "argument 5 is 256 bytes long; at most 255 are accepted",
            ),
            (
                format!("core 1 1024 1 /dev/a 0 {long}"),
                E::ArgumentTooLong { index: 7, len: 256 },
                "argument 7 is 256 bytes long; at most 255 are accepted",
            ),
            (
                "core 1 1024 1 /dev/a\0 0".into(),
                E::ControlCharacter { offset: 20 },
                "mirror table has a control character at byte 20",
            ),
            (
                "core 1 1024\x0b1 /dev/a 0".into(),
                E::ControlCharacter { offset: 11 },
                "mirror table has a control character at byte 11",
            ),
            (
                "mirror 1 1024 1 /dev/a 0".into(),
                E::UnknownLogType(w("mirror")),
                "unknown log type 'mirror' (expected core, disk or dmirror)",
            ),
            (
                "clustered_disk 3 253:0 1024 uuid 1 /dev/a 0".into(),
                E::UnknownLogType(w("clustered_disk")),
                "unknown log type 'clustered_disk' (expected core, disk or dmirror)",
            ),
            (
                "CORE 1 1024 1 /dev/a 0".into(),
                E::UnknownLogType(w("CORE")),
                "unknown log type 'CORE' (expected core, disk or dmirror)",
            ),
            (
                "core".into(),
                E::Missing(Field::LogArgCount),
                "mirror table ends where #log_args was expected",
            ),
            (
                "core 1 1024".into(),
                E::Missing(Field::MirrorCount),
                "mirror table ends where #mirrors was expected",
            ),
            (
                "core 3 1024 nosync x 1 /dev/a 0".into(),
                E::LogArgCount {
                    log: LogType::Core,
                    count: 3
                },
                "log type core takes 1 or 2 arguments, not 3",
            ),
            (
                "core 0 2 /dev/a 0 /dev/b 0".into(),
                E::LogArgCount {
                    log: LogType::Core,
                    count: 0
                },
                "log type core takes 1 or 2 arguments, not 0",
            ),
            (
                "disk 1 1024 2 /dev/a 0 /dev/b 0".into(),
                E::LogArgCount {
                    log: LogType::Disk,
                    count: 1
                },
                "log type disk takes 2 or 3 arguments, not 1",
            ),
            (
                "dmirror 4 0 1 /dev/a 0".into(),
                E::LogArgCount {
                    log: LogType::Dmirror,
                    count: 4
                },
                "log type dmirror takes 1 or 2 arguments, not 4",
            ),
            (
                "disk 3 253:0 1024".into(),
                E::MissingLogArgs {
                    log: LogType::Disk,
                    expected: 3,
                    got: 2
                },
                "log type disk announces 3 arguments but the table has only 2",
            ),
            (
                "core 1".into(),
                E::MissingLogArgs {
                    log: LogType::Core,
                    expected: 1,
                    got: 0
                },
                "log type core announces 1 arguments but the table has only 0",
            ),
            (
                "core one 1024 1 /dev/a 0".into(),
                E::BadNumber {
                    field: Field::LogArgCount,
                    word: w("one")
                },
                "#log_args 'one' is not a decimal number below 2^64",
            ),
            (
                "core 1 1k 1 /dev/a 0".into(),
                E::BadNumber {
                    field: Field::RegionSize,
                    word: w("1k")
                },
                "region size '1k' is not a decimal number below 2^64",
            ),
            (
                "core 1 99999999999999999999 1 /dev/a 0".into(),
                E::BadNumber {
                    field: Field::RegionSize,
                    word: w("99999999999999999999")
                },
                "region size '99999999999999999999' is not a decimal number below 2^64",
            ),
            (
                "core 1 1024 +2 /dev/a 0 /dev/b 0".into(),
                E::BadNumber {
                    field: Field::MirrorCount,
                    word: w("+2")
                },
                "#mirrors '+2' is not a decimal number below 2^64",
            ),
            (
                "core 1 1024 2 /dev/a 0 /dev/b -1".into(),
                E::BadNumber {
                    field: Field::Offset { leg: 1 },
                    word: w("-1")
                },
                "offset of leg 1 '-1' is not a decimal number below 2^64",
            ),
            (
                "core 1 1024 2 /dev/a 0 /dev/b 18446744073709551616".into(),
                E::BadNumber {
                    field: Field::Offset { leg: 1 },
                    word: w("18446744073709551616")
                },
                "offset of leg 1 '18446744073709551616' is not a decimal number below 2^64",
            ),
            (
                "core 1 1024 1 /dev/a 0 x handle_errors".into(),
                E::BadNumber {
                    field: Field::FeatureCount,
                    word: w("x")
                },
                "#features 'x' is not a decimal number below 2^64 \
                 (more device/offset pairs than #mirrors?)",
            ),
            (
                "core 2 1024 Nosync 1 /dev/a 0".into(),
                E::UnknownLogArg {
                    log: LogType::Core,
                    word: w("Nosync")
                },
                "unknown argument 'Nosync' for log type core (expected sync or nosync)",
            ),
            (
                "disk 3 253:0 1024 block_on_error 1 /dev/a 0".into(),
                E::UnknownLogArg {
                    log: LogType::Disk,
                    word: w("block_on_error")
                },
                "unknown argument 'block_on_error' for log type disk (expected sync or nosync)",
            ),
            (
                "core 1 1000 1 /dev/a 0".into(),
                E::RegionNotPowerOfTwo(1000),
                "region size 1000 is not a power of two",
            ),
            (
                "core 1 4 1 /dev/a 0".into(),
                E::RegionTooSmall(4),
                "region size 4 is too small (at least 8 sectors, 4 KiB)",
            ),
            (
                "disk 2 253:0 0 1 /dev/a 0".into(),
                E::RegionTooSmall(0),
                "region size 0 is too small (at least 8 sectors, 4 KiB)",
            ),
            (
                "dmirror 1 4294967296 1 /dev/a 0".into(),
                E::RegionTooLarge(1 << 32),
                "region size 4294967296 is too large (at most 2147483648 sectors, 1 TiB)",
            ),
            (
                "core 1 1024 0".into(),
                E::MirrorCount(0),
                "#mirrors 0 is out of range (1 to 32)",
            ),
            (
                "core 1 1024 33 /dev/a 0".into(),
                E::MirrorCount(33),
                "#mirrors 33 is out of range (1 to 32)",
            ),
            (
                "core 1 1024 3 /dev/a 0 /dev/b 0".into(),
                E::MissingLegs {
                    expected: 3,
                    got: 2
                },
                "#mirrors is 3 but the table has 2 complete device/offset pairs",
            ),
            (
                "core 1 1024 2 /dev/a 0 /dev/b".into(),
                E::MissingLegs {
                    expected: 2,
                    got: 1
                },
                "#mirrors is 2 but the table has 1 complete device/offset pairs",
            ),
            (
                "core 1 1024 2 /dev/a 0 /dev/a 8".into(),
                E::DuplicateDevice(w("/dev/a")),
                "device '/dev/a' appears more than once",
            ),
            (
                "disk 2 253:1 1024 2 253:1 0 253:2 0".into(),
                E::DuplicateDevice(w("253:1")),
                "device '253:1' appears more than once",
            ),
            (
                "core 1 1024 1 /dev/a 0 2 handle_errors".into(),
                E::FeatureCount {
                    count: 2,
                    available: 1
                },
                "#features is 2 but only 1 arguments follow",
            ),
            (
                "core 1 1024 1 /dev/a 0 1".into(),
                E::FeatureCount {
                    count: 1,
                    available: 0
                },
                "#features is 1 but only 0 arguments follow",
            ),
            (
                "core 1 1024 1 /dev/a 0 1 handle_error".into(),
                E::UnknownFeature(w("handle_error")),
                "unknown feature 'handle_error' (expected handle_errors or keep_log)",
            ),
            (
                "core 1 1024 1 /dev/a 0 2 handle_errors handle_errors".into(),
                E::DuplicateFeature(Feature::HandleErrors),
                "feature handle_errors is given more than once",
            ),
            (
                "core 1 1024 1 /dev/a 0 3 handle_errors keep_log keep_log".into(),
                E::DuplicateFeature(Feature::KeepLog),
                "feature keep_log is given more than once",
            ),
            (
                "disk 2 253:0 1024 2 253:1 0 253:2 0 1 keep_log".into(),
                E::KeepLogWithoutHandleErrors,
                "feature keep_log requires feature handle_errors",
            ),
            (
                "core 1 1024 1 /dev/a 0 1 handle_errors keep_log".into(),
                E::TrailingGarbage {
                    index: 9,
                    word: w("keep_log")
                },
                "unexpected argument 9 'keep_log' after the end of the table",
            ),
            (
                "core 1 1024 1 /dev/a 0 0 handle_errors".into(),
                E::TrailingGarbage {
                    index: 8,
                    word: w("handle_errors")
                },
                "unexpected argument 8 'handle_errors' after the end of the table",
            ),
            (
                "core 1 1024 2 /dev/a 0 /dev/b 0 /dev/c 0".into(),
                E::BadNumber {
                    field: Field::FeatureCount,
                    word: w("/dev/c")
                },
                "#features '/dev/c' is not a decimal number below 2^64 \
                 (more device/offset pairs than #mirrors?)",
            ),
        ];
        v
    }

    #[test]
    fn every_parse_error() {
        for (table, want, want_msg) in bad_tables() {
            let got = parse(&table);
            assert_eq!(got, Err(want), "table {table:?}");
            assert_eq!(parse_bytes(table.as_bytes()), Err(want), "table {table:?}");
            assert_eq!(msg(&want), want_msg, "table {table:?}");
        }
        // Only through bytes: not UTF-8.
        let e = parse_bytes(b"core 1 1024 1 /dev/\xff 0").unwrap_err();
        assert_eq!(e, TableError::NotUtf8 { offset: 19 });
        assert_eq!(msg(&e), "mirror table is not valid UTF-8 (byte 19)");
        // Overlong bytes are refused before anything is looked at.
        let e = parse_bytes(&[0xff; MAX_TABLE_BYTES + 1]).unwrap_err();
        assert_eq!(
            e,
            TableError::TableTooLong {
                len: MAX_TABLE_BYTES + 1
            }
        );
    }

    #[test]
    fn words_in_errors_are_cut_at_char_boundaries() {
        // 31 ASCII bytes and a 2-byte character straddling the 32-byte limit.
        let word = format!("{}é{}", "a".repeat(31), "z".repeat(10));
        let e = parse(&format!("{word} 1 1024 1 /dev/a 0")).unwrap_err();
        let TableError::UnknownLogType(kept) = e else {
            panic!("{e:?}")
        };
        assert_eq!(kept.as_str(), "a".repeat(31));
        assert!(kept.is_truncated());
        assert_eq!(
            msg(&e),
            format!(
                "unknown log type '{}...' (expected core, disk or dmirror)",
                "a".repeat(31)
            )
        );
        let short = Word::new("ok");
        assert_eq!(short.as_str(), "ok");
        assert!(!short.is_truncated());
        assert_eq!(format!("{short:?}"), "Word(\"ok\")");
    }

    fn status(nlegs: u8, states: &[LegState], in_sync: u64, total: u64) -> Status {
        let mut leg = [LegStatus::EMPTY; MAX_LEGS];
        for (l, &s) in leg.iter_mut().zip(states) {
            l.state = s;
        }
        Status {
            legs: nlegs,
            leg,
            authoritative: 0,
            generation: 1,
            regions: total,
            regions_in_sync: in_sync,
            dirty_regions: 0,
            inflight_parents: 0,
            inflight_leg_ios: 0,
            counters: Counters::default(),
            read_policy: ReadPolicy::default(),
        }
    }

    fn status_string(st: &Status, t: &MirrorTable<'_>, names: &[&str], log: LogHealth) -> String {
        let mut s = String::new();
        format_status(st, t, names, log, &mut s).unwrap();
        s
    }

    #[test]
    fn status_two_legs_disk_log_one_failed() {
        let t = parse("disk 2 /dev/mapper/vg-lv_mlog 1024 2 /dev/x 0 /dev/y 0 1 handle_errors")
            .unwrap();
        let st = status(2, &[LegState::InSync, LegState::Failed], 80, 81);
        // The line libdevmapper's own mirror status test parses.
        assert_eq!(
            status_string(&st, &t, &["253:1", "253:2", "253:0"], LogHealth::Alive),
            "2 253:1 253:2 80/81 1 AD 3 disk 253:0 A"
        );
        assert_eq!(
            status_string(&st, &t, &["253:1", "253:2", "253:0"], LogHealth::Failed),
            "2 253:1 253:2 80/81 1 AD 3 disk 253:0 D"
        );
        assert_eq!(
            status_string(&st, &t, &[], LogHealth::FlushFailed),
            "2 /dev/x /dev/y 80/81 1 AD 3 disk /dev/mapper/vg-lv_mlog F"
        );
    }

    #[test]
    fn status_three_legs() {
        let t = parse("core 2 1024 nosync 3 /dev/a 0 /dev/b 0 /dev/c 0").unwrap();
        let st = status(
            3,
            &[LegState::InSync, LegState::Missing, LegState::Rebuilding],
            10,
            20,
        );
        assert_eq!(
            status_string(&st, &t, &["253:4", "253:5", "253:6"], LogHealth::Failed),
            "3 253:4 253:5 253:6 10/20 1 ADA 1 core"
        );
        let st = status(
            3,
            &[LegState::Failed, LegState::InSync, LegState::Empty],
            20,
            20,
        );
        // Missing names fall back to the table's strings.
        assert_eq!(
            status_string(&st, &t, &["253:4"], LogHealth::Alive),
            "3 253:4 /dev/b /dev/c 20/20 1 DAD 1 core"
        );
        let t = parse("dmirror 1 0 3 /dev/a 0 /dev/b 0 /dev/c 0").unwrap();
        let st = status(3, &[LegState::InSync; 3], 99, 20);
        assert_eq!(
            status_string(
                &st,
                &t,
                &["1:1", "1:2", "1:3", "ignored"],
                LogHealth::Failed
            ),
            "3 1:1 1:2 1:3 20/20 1 AAA 1 dmirror"
        );
    }

    #[test]
    fn health_chars() {
        assert_eq!(leg_health(LegState::InSync), 'A');
        assert_eq!(leg_health(LegState::Rebuilding), 'A');
        assert_eq!(leg_health(LegState::Failed), 'D');
        assert_eq!(leg_health(LegState::Missing), 'D');
        assert_eq!(leg_health(LegState::Empty), 'D');
    }

    #[test]
    fn device_checks() {
        use TableError as E;
        let t = parse("core 1 1024 2 /dev/a 0 /dev/b 100").unwrap();
        assert_eq!(check_devices(&t, 1000, &[1000, 1100], 50), Ok(()));
        assert_eq!(check_devices(&t, 0, &[1000, 1100], 0), Err(E::EmptyTarget));
        let e = check_devices(&t, 1000, &[1000], 0).unwrap_err();
        assert_eq!(
            e,
            E::DeviceCount {
                expected: 2,
                got: 1
            }
        );
        assert_eq!(msg(&e), "internal error: 1 device sizes given for 2 legs");
        assert!(check_devices(&t, 1000, &[1000, 1100, 5], 0).is_err());
        let e = check_devices(&t, 1000, &[1000, 100], 0).unwrap_err();
        assert_eq!(
            e,
            E::OffsetBeyondDevice {
                leg: 1,
                dev: w("/dev/b"),
                offset: 100,
                dev_sectors: 100
            }
        );
        assert_eq!(
            msg(&e),
            "offset 100 of leg 1 is beyond the end of device '/dev/b' (100 sectors)"
        );
        let e = check_devices(&t, 1000, &[1000, 1099], 0).unwrap_err();
        assert_eq!(
            e,
            E::DeviceTooSmall {
                leg: 1,
                dev: w("/dev/b"),
                need: 1100,
                dev_sectors: 1099
            }
        );
        assert_eq!(
            msg(&e),
            "device '/dev/b' of leg 1 has 1099 sectors but 1100 are needed"
        );
        let e = check_devices(&t, 1001, &[1000, 2000], 0).unwrap_err();
        assert_eq!(
            e,
            E::DeviceTooSmall {
                leg: 0,
                dev: w("/dev/a"),
                need: 1001,
                dev_sectors: 1000
            }
        );

        // The metadata area counts only for the dmirror log.
        let t = parse("dmirror 1 0 2 /dev/a 0 /dev/b 100").unwrap();
        assert_eq!(check_devices(&t, 1000, &[1050, 1150], 50), Ok(()));
        let e = check_devices(&t, 1000, &[1050, 1149], 50).unwrap_err();
        assert_eq!(
            e,
            E::DeviceTooSmall {
                leg: 1,
                dev: w("/dev/b"),
                need: 1150,
                dev_sectors: 1149
            }
        );
        let t = parse("disk 2 /dev/log 1024 1 /dev/a 0").unwrap();
        assert_eq!(check_devices(&t, 1000, &[1000], 50), Ok(()));

        // Overflow of offset + length.
        let t = parse("core 1 1024 1 /dev/a 18446744073709551610").unwrap();
        let e = check_devices(&t, 10, &[u64::MAX], 0).unwrap_err();
        assert_eq!(
            e,
            E::DeviceTooSmall {
                leg: 0,
                dev: w("/dev/a"),
                need: u64::MAX,
                dev_sectors: u64::MAX
            }
        );
        assert_eq!(
            msg(&e),
            "device '/dev/a' of leg 0 has 18446744073709551615 sectors \
             but offset, length and metadata need 2^64 sectors or more"
        );
        // A sum of exactly u64::MAX that fits is not an overflow.
        let t = parse("core 1 1024 1 /dev/a 18446744073709551605").unwrap();
        assert_eq!(check_devices(&t, 10, &[u64::MAX], 0), Ok(()));
        // A hand-made table with a bad leg count does not index out of bounds.
        let mut t = parse("core 1 1024 1 /dev/a 0").unwrap();
        t.nlegs = 40;
        assert!(check_devices(&t, 10, &[100; 40], 0).is_err());
    }

    #[test]
    fn every_variant_is_reached() {
        let mut seen = BTreeSet::new();
        for (_, e, _) in bad_tables() {
            seen.insert(variant(&e));
        }
        seen.insert(variant(&parse_bytes(b"\xc3").unwrap_err()));
        let t = parse("dmirror 1 0 1 /dev/a 8").unwrap();
        for (target, sizes) in [(0, [100]), (10, [8]), (10, [17])] {
            seen.insert(variant(&check_devices(&t, target, &sizes, 0).unwrap_err()));
        }
        seen.insert(variant(&check_devices(&t, 10, &[], 0).unwrap_err()));
        assert_eq!(seen.len(), VARIANTS, "reached: {seen:?}");
    }

    #[test]
    fn write_message_truncates_and_terminates() {
        let e = TableError::RegionNotPowerOfTwo(1000);
        let full = "region size 1000 is not a power of two";
        let mut buf = [0xAAu8; 64];
        let n = write_message(&e, &mut buf);
        assert_eq!(n, full.len());
        assert_eq!(&buf[..n], full.as_bytes());
        assert_eq!(buf[n], 0);
        assert_eq!(buf[n + 1], 0xAA, "nothing written past the NUL");

        let mut buf = [0xAAu8; 8];
        let n = e.message(&mut buf);
        assert_eq!(n, 7);
        assert_eq!(&buf[..7], b"region ");
        assert_eq!(buf[7], 0);

        let mut one = [0xAAu8; 1];
        assert_eq!(write_message(&e, &mut one), 0);
        assert_eq!(one[0], 0);
        assert_eq!(write_message(&e, &mut []), 0);

        // A multi-byte character is never cut in half.
        let e = TableError::UnknownLogType(Word::new("é"));
        let mut buf = [0xAAu8; 20]; // "unknown log type '" is 18 bytes; 'é' needs 2 more + NUL.
        let n = write_message(&e, &mut buf);
        assert_eq!(n, 18);
        assert!(core::str::from_utf8(&buf[..n]).is_ok());
        assert_eq!(buf[18], 0);
    }

    #[test]
    fn buf_writer_reports_truncation() {
        let mut buf = [0xAAu8; 10];
        let mut bw = BufWriter::new(&mut buf);
        assert!(bw.is_empty());
        assert!(write!(bw, "abc").is_ok());
        assert!(write!(bw, "{}", 12345).is_ok());
        assert_eq!(bw.as_str(), "abc12345");
        assert!(!bw.truncated());
        assert!(write!(bw, "xy").is_err());
        assert!(bw.truncated());
        assert_eq!(bw.as_str(), "abc12345x");
        assert_eq!(bw.len(), 9);
        assert!(write!(bw, "z").is_err(), "nothing more after a truncation");
        assert_eq!(buf, *b"abc12345x\0");

        // format_table into a buffer too small: an error and a terminated prefix.
        let t = parse("core 1 1024 2 /dev/a 0 /dev/b 0").unwrap();
        let mut buf = [0u8; 16];
        let mut bw = BufWriter::new(&mut buf);
        assert!(format_table(&t, &mut bw).is_err());
        assert!(bw.truncated());
        assert_eq!(bw.as_str(), "core 1 1024 2 /");
        assert_eq!(buf[15], 0);
        let mut buf = [0u8; 64];
        let mut bw = BufWriter::new(&mut buf);
        assert!(format_table(&t, &mut bw).is_ok());
        assert_eq!(bw.as_bytes(), b"core 1 1024 2 /dev/a 0 /dev/b 0");
    }

    /// An independent, allocation-happy statement of the grammar, to compare `parse` against.
    fn reference(s: &str) -> Option<MirrorTable<'_>> {
        let is_sep = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c);
        if s.len() > 4096 || s.bytes().any(|b| (b < 0x20 && !is_sep(b)) || b == 0x7f) {
            return None;
        }
        let t: Vec<&str> = s
            .split(|c: char| c.is_ascii() && is_sep(c as u8))
            .filter(|x| !x.is_empty())
            .collect();
        if t.iter().any(|x| x.len() > 255) {
            return None;
        }
        let num = |x: &str| -> Option<u64> {
            if x.bytes().all(|b| b.is_ascii_digit()) {
                x.parse().ok()
            } else {
                None
            }
        };
        let ty = *t.first()?;
        let n = num(t.get(1)?)?;
        let (lo, hi) = match ty {
            "core" | "dmirror" => (1, 2),
            "disk" => (2, 3),
            _ => return None,
        };
        if n < lo || n > hi {
            return None;
        }
        let n = n as usize;
        let a = t.get(2..2 + n)?;
        let (log_dev, rest) = if ty == "disk" {
            (Some(a[0]), &a[1..])
        } else {
            (None, a)
        };
        let region = num(rest[0])?;
        let region_ok = (ty == "dmirror" && region == 0)
            || (region.is_power_of_two() && (8..=1u64 << 31).contains(&region));
        if !region_ok {
            return None;
        }
        let sync = match rest.get(1) {
            None => Sync::Default,
            Some(&"sync") => Sync::Sync,
            Some(&"nosync") => Sync::NoSync,
            Some(_) => return None,
        };
        let log = match (ty, log_dev) {
            ("core", _) => LogSpec::Core {
                region_sectors: region,
                sync,
            },
            ("disk", Some(dev)) => LogSpec::Disk {
                dev,
                region_sectors: region,
                sync,
            },
            _ => LogSpec::Dmirror {
                region_sectors: region,
                sync,
            },
        };
        let mut pos = 2 + n;
        let m = num(t.get(pos)?)?;
        if !(1..=32).contains(&m) {
            return None;
        }
        pos += 1;
        let mut legs = [LegSpec::UNUSED; MAX_LEGS];
        for leg in legs.iter_mut().take(m as usize) {
            *leg = LegSpec {
                dev: t.get(pos)?,
                offset: num(t.get(pos + 1)?)?,
            };
            pos += 2;
        }
        let mut devs: Vec<&str> = legs[..m as usize].iter().map(|l| l.dev).collect();
        devs.extend(log_dev);
        let ndevs = devs.len();
        devs.sort_unstable();
        devs.dedup();
        if devs.len() != ndevs {
            return None;
        }
        let (mut he, mut kl) = (false, false);
        if pos < t.len() {
            let f = usize::try_from(num(t[pos])?).ok()?;
            pos += 1;
            for x in t.get(pos..pos.checked_add(f)?)? {
                match *x {
                    "handle_errors" if !he => he = true,
                    "keep_log" if !kl => kl = true,
                    _ => return None,
                }
            }
            pos += f;
            if kl && !he {
                return None;
            }
        }
        if pos != t.len() {
            return None;
        }
        Some(MirrorTable {
            log,
            nlegs: m as u8,
            legs,
            handle_errors: he,
            keep_log: kl,
        })
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
            v[self.below(v.len())]
        }
    }

    const VOCAB: &[&str] = &[
        "core",
        "disk",
        "dmirror",
        "mirror",
        "Core",
        "sync",
        "nosync",
        "handle_errors",
        "keep_log",
        "block_on_error",
        "0",
        "1",
        "2",
        "3",
        "4",
        "7",
        "8",
        "16",
        "32",
        "33",
        "1000",
        "1024",
        "2048",
        "2147483648",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "+2",
        "0x10",
        "1e3",
        "",
        "/dev/vn0",
        "/dev/vn1",
        "/dev/vn2",
        "253:0",
        "253:1",
        "253:2",
        "/dev/mapper/vg-lv_mlog",
        "é",
        "日本",
        "a\u{0}b",
        "x\u{7f}",
        "\u{b}",
    ];
    const SEPS: &[&str] = &[" ", " ", " ", "  ", "\t", "\n", " \r\n ", "\u{c}"];
    const DEVS: &[&str] = &[
        "/dev/vn0", "/dev/vn1", "/dev/vn2", "/dev/vn3", "253:1", "253:2", "253:3",
    ];

    /// A table that is valid about half the time: each part is right unless the table is
    /// "noisy", and then each part is wrong now and then (the usual mistakes).
    fn plausible(r: &mut Rng) -> Vec<String> {
        let noisy = r.below(2) == 0;
        let bad = |r: &mut Rng| noisy && r.below(6) == 0;
        let mut t: Vec<String> = Vec::new();
        let ty = if bad(r) {
            r.pick(&["cluster", "CORE", "mirror"])
        } else {
            r.pick(&["core", "disk", "dmirror"])
        };
        let sync = if bad(r) {
            "bad"
        } else {
            r.pick(&["", "", "sync", "nosync"])
        };
        let region = if bad(r) {
            r.pick(&["0", "1000", "4", "4294967296", "1k"])
        } else if ty == "dmirror" && r.below(3) == 0 {
            "0"
        } else {
            r.pick(&["1024", "8", "2048", "2147483648"])
        };
        let mut log_args: Vec<String> = Vec::new();
        if ty == "disk" {
            log_args.push(if bad(r) {
                "/dev/leg0".into()
            } else {
                "/dev/log".into()
            });
        }
        log_args.push(region.into());
        if !sync.is_empty() {
            log_args.push(sync.into());
        }
        let nargs = if bad(r) { r.below(5) } else { log_args.len() };
        t.push(ty.into());
        t.push(nargs.to_string());
        t.extend(log_args);
        let nlegs = if bad(r) {
            r.below(36)
        } else {
            {
                let most = if r.below(10) == 0 { 32 } else { 4 };
                1 + r.below(most)
            }
        };
        let shown = if bad(r) { r.below(36) } else { nlegs };
        t.push(shown.to_string());
        for i in 0..nlegs {
            t.push(if bad(r) {
                r.pick(DEVS).into()
            } else {
                format!("/dev/leg{i}")
            });
            let offset = if bad(r) {
                r.pick(&["x", "-1", "18446744073709551616"])
            } else {
                r.pick(&["0", "2048", "18446744073709551615"])
            };
            t.push(offset.into());
        }
        let mut f: Vec<String> = match r.below(4) {
            0 => std::vec![],
            1 => std::vec!["handle_errors".into()],
            2 => std::vec!["handle_errors".into(), "keep_log".into()],
            _ => std::vec!["keep_log".into(), "handle_errors".into()],
        };
        if bad(r) {
            let i = r.below(f.len() + 1);
            f.insert(
                i,
                r.pick(&["keep_log", "handle_errors", "nofeature"]).into(),
            );
        }
        if bad(r) {
            f.retain(|x| x != "handle_errors");
        }
        if !f.is_empty() || r.below(5) == 0 {
            let count = if bad(r) { r.below(5) } else { f.len() };
            t.push(count.to_string());
            t.append(&mut f);
        }
        t
    }

    fn join(r: &mut Rng, toks: &[String]) -> Vec<u8> {
        let mut s = String::new();
        if r.below(8) == 0 {
            s.push_str(r.pick(SEPS));
        }
        for (i, tok) in toks.iter().enumerate() {
            if i > 0 {
                s.push_str(if r.below(4) == 0 { r.pick(SEPS) } else { " " });
            }
            s.push_str(tok);
        }
        s.into_bytes()
    }

    fn mutate(r: &mut Rng, toks: &mut Vec<String>) {
        for _ in 0..1 + r.below(3) {
            let len = toks.len();
            match r.below(6) {
                0 if len > 0 => {
                    toks.remove(r.below(len));
                }
                1 if len > 0 => {
                    let i = r.below(len);
                    let dup = toks[i].clone();
                    toks.insert(r.below(len + 1), dup);
                }
                2 if len > 1 => {
                    let (i, j) = (r.below(len), r.below(len));
                    toks.swap(i, j);
                }
                3 if len > 0 => {
                    let i = r.below(len);
                    toks[i] = r.pick(VOCAB).into();
                }
                4 => toks.insert(r.below(len + 1), r.pick(VOCAB).into()),
                _ => {
                    if r.below(50) == 0 {
                        toks.push("z".repeat(200 + r.below(100)));
                    }
                }
            }
        }
    }

    fn check_accepted(t: &MirrorTable<'_>, r: &mut Rng) {
        assert!((1..=32).contains(&t.nlegs));
        let region = t.log.region_sectors();
        assert!(
            (region.is_power_of_two()
                && (MIN_REGION_SECTORS..=MAX_REGION_SECTORS).contains(&region))
                || (region == 0 && t.log.log_type() == LogType::Dmirror)
        );
        assert!(!t.keep_log || t.handle_errors);
        assert!(t.legs[usize::from(t.nlegs)..]
            .iter()
            .all(|l| *l == LegSpec::UNUSED));
        for (i, leg) in t.used_legs().iter().enumerate() {
            assert!(!leg.dev.is_empty() && !leg.dev.bytes().any(|b| b.is_ascii_whitespace()));
            assert!(t.used_legs()[..i].iter().all(|l| l.dev != leg.dev));
        }
        // Round trip, and the canonical form is a fixed point.
        let s = table_string(t);
        let again = parse(&s).unwrap_or_else(|e| panic!("{s:?} does not parse back: {e}"));
        assert_eq!(&again, t);
        assert_eq!(table_string(&again), s);
        // Status: the right number of fields, whatever the leg states.
        let states = [
            LegState::InSync,
            LegState::Rebuilding,
            LegState::Failed,
            LegState::Missing,
            LegState::Empty,
        ];
        let st_states: Vec<LegState> = (0..t.nlegs)
            .map(|_| states[r.below(states.len())])
            .collect();
        let st = status(t.nlegs, &st_states, r.next() % 100, 100);
        let line = status_string(&st, t, &[], LogHealth::Alive);
        let fields: Vec<&str> = line.split(' ').collect();
        let log_fields = if t.log.log_type() == LogType::Disk {
            4
        } else {
            2
        };
        assert_eq!(
            fields.len(),
            1 + usize::from(t.nlegs) + 3 + log_fields,
            "{line}"
        );
        let health = fields[usize::from(t.nlegs) + 3];
        assert_eq!(health.len(), usize::from(t.nlegs));
        for (c, s) in health.chars().zip(&st_states) {
            assert_eq!(c == 'A', s.is_active(), "{line}");
        }
        // Into a small buffer: truncated or not, never past its end.
        let mut buf = std::vec![0xAAu8; r.below(64)];
        let cap = buf.len();
        let mut bw = BufWriter::new(&mut buf);
        let res = format_status(&st, t, &[], LogHealth::Alive, &mut bw);
        assert_eq!(res.is_err(), bw.truncated());
        assert_eq!(
            bw.truncated(),
            line.len() + 1 > cap.max(1) || cap == 0 && !line.is_empty()
        );
        assert!(line.starts_with(bw.as_str()));
    }

    fn check_rejected(e: &TableError, r: &mut Rng) {
        let m = msg(e);
        assert!(
            !m.is_empty() && !m.contains('\n') && !m.contains('\0'),
            "{e:?}: {m:?}"
        );
        let mut buf = std::vec![0xAAu8; r.below(80)];
        let n = write_message(e, &mut buf);
        if !buf.is_empty() {
            assert!(n < buf.len());
            assert_eq!(buf[n], 0);
            let written = core::str::from_utf8(&buf[..n]).unwrap();
            assert!(m.starts_with(written));
            assert_eq!(n == m.len(), m.len() < buf.len());
        } else {
            assert_eq!(n, 0);
        }
    }

    /// 200k random inputs: token soups from a vocabulary of valid and invalid words, plausible
    /// tables, and mutations of them (including raw byte damage). `parse` must never panic, agree
    /// with the reference grammar, give every error a one-line message, and round-trip every
    /// table it accepts.
    #[test]
    fn random_tables() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut rejected) = (0usize, 0usize);
        let mut seen = BTreeSet::new();
        for i in 0..200_000 {
            let input: Vec<u8> = match i % 4 {
                0 => {
                    let n = r.below(16);
                    let toks: Vec<String> = (0..n).map(|_| r.pick(VOCAB).into()).collect();
                    join(&mut r, &toks)
                }
                1 => {
                    let toks = plausible(&mut r);
                    join(&mut r, &toks)
                }
                2 => {
                    let mut toks = plausible(&mut r);
                    mutate(&mut r, &mut toks);
                    join(&mut r, &toks)
                }
                _ => {
                    let toks = plausible(&mut r);
                    let mut b = join(&mut r, &toks);
                    for _ in 0..1 + r.below(2) {
                        if b.is_empty() {
                            break;
                        }
                        let at = r.below(b.len());
                        match r.below(3) {
                            0 => b[at] = r.next() as u8,
                            1 => b.truncate(at),
                            _ => b.insert(at, [b' ', 0xc3, 0xff, b'0', 0x01][r.below(5)]),
                        }
                    }
                    b
                }
            };
            let got = parse_bytes(&input);
            if let Ok(s) = core::str::from_utf8(&input) {
                assert_eq!(parse(s), got, "{s:?}");
                assert_eq!(got.ok(), reference(s), "{s:?}");
            } else {
                assert!(matches!(
                    got,
                    Err(TableError::NotUtf8 { .. } | TableError::TableTooLong { .. })
                ));
            }
            match got {
                Ok(t) => {
                    accepted += 1;
                    check_accepted(&t, &mut r);
                }
                Err(e) => {
                    rejected += 1;
                    seen.insert(variant(&e));
                    check_rejected(&e, &mut r);
                }
            }
        }
        std::eprintln!("accepted {accepted}, rejected {rejected}, errors {seen:?}");
        // The generator must exercise both sides and (nearly) every parse error.
        assert!(
            accepted > 20_000 && rejected > 20_000,
            "accepted {accepted}, rejected {rejected}"
        );
        assert!(seen.len() >= VARIANTS - 5, "parse errors reached: {seen:?}");
    }
}
