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
    /// `need` is `u64::MAX` when the sum overflows.
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
                write!(f, "{field} '{word}' is not a decimal number below 2^64")
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
                        "device '{dev}' of leg {leg} is too small: offset plus length overflow ({dev_sectors} sectors)"
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
            dst.copy_from_slice(src);
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
            .and_then(|n| n.checked_add(meta))
            .unwrap_or(u64::MAX);
        if need > size || need == u64::MAX {
            return Err(TableError::DeviceTooSmall {
                leg: leg_no,
                dev: Word::new(leg.dev),
                need,
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
