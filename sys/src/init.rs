//! The state a mirror starts from: fresh (label time) or assembled from the legs' metadata.
use crate::types::{LegState, MAX_LEGS};

/// A rebuild in progress, as recorded in metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebuild {
    /// Regions below this index are already copied.
    pub checkpoint: u64,
    /// Every region needs copying (a new or failed leg); otherwise only the tracked ones.
    pub full: bool,
}

/// One leg slot at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegInit {
    pub state: LegState,
    pub uuid: [u8; 16],
    /// Size of the leg's device in sectors (its metadata area sits at its end).
    pub sectors: u64,
    /// For `Rebuilding`: where the copy stands.
    pub rebuild: Rebuild,
    /// Generation at which this slot's state last changed, as recorded in metadata (0 when
    /// unknown or fresh). Kept in every superblock: assembly compares a departed leg's `since`
    /// with that leg's own generation to tell a stale leg from a split brain.
    pub since: u64,
}

impl LegInit {
    pub const EMPTY: LegInit = LegInit {
        state: LegState::Empty,
        uuid: [0; 16],
        sectors: 0,
        rebuild: Rebuild {
            checkpoint: 0,
            full: true,
        },
        since: 0,
    };
}

/// Everything a mirror starts from besides its [`crate::Config`].
#[derive(Clone, Copy, Debug)]
pub struct Init<'i> {
    pub mirror_uuid: [u8; 16],
    /// NUL-padded name.
    pub name: [u8; 32],
    /// Generation of the newest metadata (bumped on every leg state change).
    pub generation: u64,
    /// Sequence number of the newest superblock written (the next write uses `seq + 1`).
    pub seq: u64,
    /// The leg that is the source of truth for regions that may differ.
    pub authoritative: u8,
    pub legs: [LegInit; MAX_LEGS],
    /// Union of the write-intent bitmaps found on disk (after an unclean shutdown): these regions
    /// are resynced from the authoritative leg before any other leg serves them. Bit `r` of byte
    /// `r / 8` (LSB first) is region `r`.
    pub dirty: Option<&'i [u8]>,
    /// Per leg, the regions written while it was away (tracking bitmap), same bit order.
    pub tracking: [Option<&'i [u8]>; MAX_LEGS],
}

impl<'i> Init<'i> {
    /// No legs, no history: the starting value of an `Init` a host fills field by field.
    pub const EMPTY: Init<'i> = Init {
        mirror_uuid: [0; 16],
        name: [0; 32],
        generation: 0,
        seq: 0,
        authoritative: 0,
        legs: [LegInit::EMPTY; MAX_LEGS],
        dirty: None,
        tracking: [None; MAX_LEGS],
    };

    /// A mirror with no history: legs `0..legs` present, leg 0 authoritative and in sync, the
    /// others in sync too when `assume_clean`, rebuilding from leg 0 otherwise. The UUIDs are
    /// fixed placeholders (non-zero, distinct per leg): a host labelling real devices replaces
    /// them with random ones.
    pub fn fresh(legs: u8, leg_sectors: u64, assume_clean: bool) -> Init<'i> {
        let mut init = Init::EMPTY;
        init.fresh_into(legs, leg_sectors, assume_clean);
        init
    }

    /// [`Init::fresh`] written over `self` (an `Init` is ~2.4 KiB: a kernel glue fills one in
    /// place rather than moving it through temporaries).
    pub fn fresh_into(&mut self, legs: u8, leg_sectors: u64, assume_clean: bool) {
        self.mirror_uuid = *b"dmirror-mirror-0";
        self.name = [0; 32];
        self.generation = 1;
        self.seq = 0;
        self.authoritative = 0;
        self.dirty = None;
        self.tracking = [None; MAX_LEGS];
        for (i, leg) in self.legs.iter_mut().enumerate() {
            *leg = LegInit::EMPTY;
            if i >= usize::from(legs) {
                continue;
            }
            leg.sectors = leg_sectors;
            leg.uuid = *b"dmirror-leg-0000";
            leg.uuid[15] = b'0' + (i % 10) as u8;
            leg.uuid[14] = b'0' + (i / 10) as u8;
            leg.state = if i == 0 || assume_clean {
                LegState::InSync
            } else {
                LegState::Rebuilding
            };
        }
    }
}
