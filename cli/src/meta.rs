//! Adapter between the CLI and the on-disk format / assembly code.
//!
//! PROVISIONAL: `dmirror::format` (superblock encode/decode, layout) and `dmirror::assemble` are
//! being written on branch `format`. Until they land, this module carries a minimal stand-in so
//! the CLI compiles and label/inspect/check can be exercised. Everything the CLI needs from the
//! format goes through the functions here, so replacing the stand-in touches only this file.
use crate::dev::{uuid_str, Dev};
use dmirror::{Config, Init, LegInit, LegState, LogKind, Rebuild, MAX_LEGS};

pub const SLOT_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"DMIRROR\0";
const VERSION: u32 = 1;

/// The newest valid superblock of one leg, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub version: u32,
    pub mirror_uuid: [u8; 16],
    pub leg_uuid: [u8; 16],
    pub index: u8,
    pub legs: u8,
    pub leg_uuids: Vec<[u8; 16]>,
    pub leg_states: Vec<LegState>,
    pub rebuild: Vec<Rebuild>,
    pub generation: u64,
    pub seq: u64,
    pub authoritative: u8,
    pub data_sectors: u64,
    pub sector_size: u32,
    pub region_sectors: u64,
    pub clean: bool,
    pub name: String,
}

impl Label {
    pub fn regions(&self) -> u64 {
        self.data_sectors.div_ceil(self.region_sectors.max(1))
    }
}

/// Everything read from one leg's metadata area.
#[derive(Clone, Debug)]
pub struct LegMeta {
    pub label: Label,
    /// Which superblock slot held the newest copy.
    pub slot: usize,
    /// Write-intent bitmap (bit r of byte r/8, LSB first).
    pub dirty: Vec<u8>,
    /// Per leg slot: regions written while that leg was away.
    pub tracking: Vec<Option<Vec<u8>>>,
}

pub fn count_bits(b: &[u8]) -> u64 {
    b.iter().map(|x| u64::from(x.count_ones())).sum()
}

// ---- stand-in layout ------------------------------------------------------------------------

fn bitmap_bytes(data_sectors: u64, region_sectors: u64) -> u64 {
    data_sectors.div_ceil(region_sectors).div_ceil(8)
}

fn round4k(b: u64) -> u64 {
    b.div_ceil(4096) * 4096
}

/// Metadata area layout for a leg (stand-in): `[dirty bitmap][tracking x legs][slot0][slot1]`,
/// each piece 4 KiB aligned, at the end of the leg.
struct Layout {
    data_sectors: u64,
    bitmap_off: u64,
    bitmap_len: u64,
    slot_off: [u64; 2],
}

fn layout(leg_bytes: u64, sector_size: u32, region_sectors: u64, legs: u8) -> Option<Layout> {
    let ss = u64::from(sector_size);
    let leg_sectors = leg_bytes / ss;
    // The bitmap is sized for the whole leg, an upper bound of the data size.
    let bm = round4k(bitmap_bytes(leg_sectors, region_sectors).max(1));
    let meta_bytes = bm * (1 + u64::from(legs)) + 2 * SLOT_BYTES as u64;
    let meta_sectors = meta_bytes.div_ceil(ss);
    let data_sectors = leg_sectors.checked_sub(meta_sectors)?;
    if data_sectors == 0 {
        return None;
    }
    let end = leg_sectors * ss;
    let slot1 = end - SLOT_BYTES as u64;
    let slot0 = slot1 - SLOT_BYTES as u64;
    let bitmap_off = slot0 - bm * (1 + u64::from(legs));
    Some(Layout {
        data_sectors,
        bitmap_off,
        bitmap_len: bm,
        slot_off: [slot0, slot1],
    })
}

/// Region size to label with (sectors).
pub fn default_region_sectors(leg_bytes: u64, sector_size: u32) -> u64 {
    dmirror::format::default_region_sectors(leg_bytes / u64::from(sector_size), sector_size)
}

/// Largest data size a leg of `leg_bytes` can carry, in sectors.
pub fn max_data_sectors(
    leg_bytes: u64,
    sector_size: u32,
    region_sectors: u64,
    legs: u8,
) -> Option<u64> {
    layout(leg_bytes, sector_size, region_sectors, legs).map(|l| l.data_sectors)
}

// ---- stand-in superblock ----------------------------------------------------------------------

pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc: u32 = !0;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

fn state_code(s: LegState) -> u8 {
    match s {
        LegState::InSync => 1,
        LegState::Rebuilding => 2,
        LegState::Failed => 3,
        LegState::Missing => 4,
        LegState::Empty => 0,
    }
}

fn state_from(c: u8) -> Option<LegState> {
    Some(match c {
        0 => LegState::Empty,
        1 => LegState::InSync,
        2 => LegState::Rebuilding,
        3 => LegState::Failed,
        4 => LegState::Missing,
        _ => return None,
    })
}

fn encode(l: &Label) -> Vec<u8> {
    let mut b = vec![0u8; SLOT_BYTES];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&l.version.to_le_bytes());
    b[16..24].copy_from_slice(&l.seq.to_le_bytes());
    b[24..32].copy_from_slice(&l.generation.to_le_bytes());
    b[32..48].copy_from_slice(&l.mirror_uuid);
    b[48..64].copy_from_slice(&l.leg_uuid);
    b[64] = l.index;
    b[65] = l.legs;
    b[66] = l.authoritative;
    b[67] = u8::from(l.clean);
    b[72..80].copy_from_slice(&l.data_sectors.to_le_bytes());
    b[80..84].copy_from_slice(&l.sector_size.to_le_bytes());
    b[88..96].copy_from_slice(&l.region_sectors.to_le_bytes());
    let n = l.name.as_bytes();
    let n = &n[..n.len().min(32)];
    b[96..96 + n.len()].copy_from_slice(n);
    for i in 0..usize::from(l.legs) {
        let o = 128 + i * 40;
        b[o..o + 16].copy_from_slice(&l.leg_uuids[i]);
        b[o + 16] = state_code(l.leg_states[i]);
        b[o + 17] = u8::from(l.rebuild[i].full);
        b[o + 24..o + 32].copy_from_slice(&l.rebuild[i].checkpoint.to_le_bytes());
    }
    let crc = crc32c(&b);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

enum Slot {
    Blank,
    Bad(String),
    Good(Label),
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn decode(b: &[u8]) -> Slot {
    if &b[0..8] != MAGIC {
        return Slot::Blank;
    }
    let crc = le32(b, 12);
    let mut c = b.to_vec();
    c[12..16].fill(0);
    if crc32c(&c) != crc {
        return Slot::Bad("checksum mismatch".into());
    }
    let version = le32(b, 8);
    if version != VERSION {
        return Slot::Bad(format!(
            "unknown format version {version} (this dmirror knows {VERSION})"
        ));
    }
    let legs = b[65];
    if legs == 0 || usize::from(legs) > MAX_LEGS || b[64] >= legs || b[66] >= legs {
        return Slot::Bad("leg count or index out of range".into());
    }
    let mut l = Label {
        version,
        seq: le64(b, 16),
        generation: le64(b, 24),
        mirror_uuid: b[32..48].try_into().unwrap_or([0; 16]),
        leg_uuid: b[48..64].try_into().unwrap_or([0; 16]),
        index: b[64],
        legs,
        authoritative: b[66],
        clean: b[67] != 0,
        data_sectors: le64(b, 72),
        sector_size: le32(b, 80),
        region_sectors: le64(b, 88),
        name: String::from_utf8_lossy(&b[96..128])
            .trim_end_matches('\0')
            .to_string(),
        leg_uuids: vec![],
        leg_states: vec![],
        rebuild: vec![],
    };
    if !l.sector_size.is_power_of_two()
        || l.sector_size < 512
        || !l.region_sectors.is_power_of_two()
    {
        return Slot::Bad("sector or region size invalid".into());
    }
    for i in 0..usize::from(legs) {
        let o = 128 + i * 40;
        l.leg_uuids.push(b[o..o + 16].try_into().unwrap_or([0; 16]));
        let Some(s) = state_from(b[o + 16]) else {
            return Slot::Bad(format!("leg {i} has an unknown state code {}", b[o + 16]));
        };
        l.leg_states.push(s);
        l.rebuild.push(Rebuild {
            full: b[o + 17] != 0,
            checkpoint: le64(b, o + 24),
        });
    }
    Slot::Good(l)
}

/// Read a leg's metadata. `Ok(None)`: no dmirror metadata at all. `Err`: metadata present but
/// unusable (corrupt, unknown version), with the reason.
pub fn probe(dev: &Dev) -> Result<Option<LegMeta>, String> {
    if dev.bytes < 2 * SLOT_BYTES as u64 {
        return Ok(None);
    }
    let mut slots = Vec::new();
    let end = dev.bytes / 512 * 512;
    for off in [end - 2 * SLOT_BYTES as u64, end - SLOT_BYTES as u64] {
        let mut b = vec![0u8; SLOT_BYTES];
        dev.read_at(&mut b, off)?;
        slots.push(decode(&b));
    }
    let mut best: Option<(usize, Label)> = None;
    let mut bad = None;
    for (i, s) in slots.into_iter().enumerate() {
        match s {
            Slot::Good(l) => {
                if best.as_ref().is_none_or(|(_, b)| l.seq > b.seq) {
                    best = Some((i, l));
                }
            }
            Slot::Bad(why) => bad = Some(why),
            Slot::Blank => {}
        }
    }
    let Some((slot, label)) = best else {
        return match bad {
            Some(why) => Err(format!("{}: corrupt dmirror metadata: {why}", dev.name)),
            None => Ok(None),
        };
    };
    let Some(lay) = layout(
        dev.bytes,
        label.sector_size,
        label.region_sectors,
        label.legs,
    ) else {
        return Err(format!(
            "{}: leg too small for the metadata it carries",
            dev.name
        ));
    };
    let n = bitmap_bytes(label.data_sectors, label.region_sectors) as usize;
    let mut dirty = vec![0u8; n];
    dev.read_at(&mut dirty, lay.bitmap_off)?;
    let mut tracking = Vec::new();
    for i in 0..u64::from(label.legs) {
        let mut t = vec![0u8; n];
        dev.read_at(&mut t, lay.bitmap_off + lay.bitmap_len * (1 + i))?;
        tracking.push(if count_bits(&t) > 0 { Some(t) } else { None });
    }
    Ok(Some(LegMeta {
        label,
        slot,
        dirty,
        tracking,
    }))
}

/// Byte offsets of the two superblock slots on a leg of `leg_bytes` carrying `label`.
pub fn slot_offsets(leg_bytes: u64, label: &Label) -> [u64; 2] {
    layout(
        leg_bytes,
        label.sector_size,
        label.region_sectors,
        label.legs,
    )
    .map(|l| l.slot_off)
    .unwrap_or([0, 0])
}

/// Write fresh metadata on `devs` (legs 0..n of a new mirror), data size `data_sectors`.
pub fn write_labels(
    devs: &[Dev],
    name: &str,
    region_sectors: u64,
    data_sectors: u64,
) -> Result<(), String> {
    let legs = devs.len() as u8;
    let mirror_uuid = crate::dev::random_uuid()?;
    let mut leg_uuids = Vec::new();
    for _ in devs {
        leg_uuids.push(crate::dev::random_uuid()?);
    }
    for (i, d) in devs.iter().enumerate() {
        let lay = layout(d.bytes, 512, region_sectors, legs)
            .ok_or_else(|| format!("{}: leg too small", d.name))?;
        let zero = vec![0u8; (lay.bitmap_len * (1 + u64::from(legs))) as usize];
        d.write_at(&zero, lay.bitmap_off)?;
        let l = Label {
            version: VERSION,
            mirror_uuid,
            leg_uuid: leg_uuids[i],
            index: i as u8,
            legs,
            leg_uuids: leg_uuids.clone(),
            leg_states: vec![LegState::InSync; devs.len()],
            rebuild: vec![
                Rebuild {
                    checkpoint: 0,
                    full: false
                };
                devs.len()
            ],
            generation: 1,
            seq: 1,
            authoritative: 0,
            data_sectors,
            sector_size: 512,
            region_sectors,
            clean: true,
            name: name.to_string(),
        };
        d.write_at(&encode(&l), lay.slot_off[0])?;
        d.write_at(&vec![0u8; SLOT_BYTES], lay.slot_off[1])?;
        d.sync()?;
    }
    Ok(())
}

/// The result of assembling a set of legs: what `Mirror::new` needs, owned.
pub struct Assembled {
    pub cfg: Config,
    pub mirror_uuid: [u8; 16],
    pub name: [u8; 32],
    pub name_str: String,
    pub generation: u64,
    pub seq: u64,
    pub authoritative: u8,
    pub legs: Vec<LegInit>,
    /// For each leg slot, the index of the given device that fills it.
    pub dev_of_slot: Vec<Option<usize>>,
    pub dirty: Option<Vec<u8>>,
    pub tracking: Vec<Option<Vec<u8>>>,
    /// Devices whose metadata is older than the mirror's (resynced before use).
    pub stale: Vec<usize>,
}

impl Assembled {
    pub fn init(&self) -> Init<'_> {
        let mut legs = [LegInit::EMPTY; MAX_LEGS];
        legs[..self.legs.len()].copy_from_slice(&self.legs);
        let mut tracking = [None; MAX_LEGS];
        for (i, t) in self.tracking.iter().enumerate() {
            tracking[i] = t.as_deref();
        }
        Init {
            mirror_uuid: self.mirror_uuid,
            name: self.name,
            generation: self.generation,
            seq: self.seq,
            authoritative: self.authoritative,
            legs,
            dirty: self.dirty.as_deref(),
            tracking,
        }
    }
}

/// Assemble legs (each with its metadata) into a mirror. `force` accepts stale legs (they are
/// resynced from the others).
pub fn assemble(devs: &[&Dev], metas: &[LegMeta], force: bool) -> Result<Assembled, String> {
    let Some(first) = metas.first() else {
        return Err("no legs given".into());
    };
    for (d, m) in devs.iter().zip(metas) {
        if m.label.mirror_uuid != first.label.mirror_uuid {
            return Err(format!(
                "legs of different mirrors: {} belongs to mirror {} but {} to mirror {}",
                devs[0].name,
                uuid_str(&first.label.mirror_uuid),
                d.name,
                uuid_str(&m.label.mirror_uuid)
            ));
        }
    }
    // The newest generation wins.
    let newest = metas
        .iter()
        .enumerate()
        .max_by_key(|(_, m)| m.label.generation)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let r = &metas[newest].label;
    let mut dev_of_slot: Vec<Option<usize>> = vec![None; usize::from(r.legs)];
    let mut stale = Vec::new();
    for (i, (d, m)) in devs.iter().zip(metas).enumerate() {
        let Some(slot) = r.leg_uuids.iter().position(|u| *u == m.label.leg_uuid) else {
            return Err(format!(
                "{}: leg {} is not a member of this mirror any more",
                d.name,
                uuid_str(&m.label.leg_uuid)
            ));
        };
        if let Some(j) = dev_of_slot[slot] {
            return Err(format!(
                "{} and {} are the same leg (uuid {})",
                devs[j].name,
                d.name,
                uuid_str(&m.label.leg_uuid)
            ));
        }
        let need = max_data_sectors(d.bytes, r.sector_size, r.region_sectors, r.legs).unwrap_or(0);
        if need < r.data_sectors {
            return Err(format!(
                "{}: leg too small: {} bytes cannot hold {} bytes of data plus metadata",
                d.name,
                d.bytes,
                r.data_sectors * u64::from(r.sector_size)
            ));
        }
        if m.label.generation < r.generation {
            if !force {
                return Err(format!(
                    "{} is stale (generation {}, the mirror is at {}): pass --force to resync it from the other legs",
                    d.name, m.label.generation, r.generation
                ));
            }
            stale.push(i);
        } else if m.label != *r && m.label.leg_states != r.leg_states && i != newest {
            return Err(format!(
                "split brain: {} and {} both claim generation {} with different histories",
                devs[newest].name, d.name, r.generation
            ));
        }
        dev_of_slot[slot] = Some(i);
    }
    let mut legs = Vec::new();
    for (slot, &present) in dev_of_slot.iter().enumerate() {
        let mut li = LegInit {
            state: r.leg_states[slot],
            uuid: r.leg_uuids[slot],
            sectors: 0,
            rebuild: r.rebuild[slot],
        };
        match present {
            Some(i) => {
                li.sectors = devs[i].bytes / u64::from(r.sector_size);
                if stale.contains(&i) && li.state == LegState::InSync {
                    li.state = LegState::Rebuilding;
                    li.rebuild = Rebuild {
                        checkpoint: 0,
                        full: true,
                    };
                }
            }
            None => {
                if li.state.is_active() {
                    li.state = LegState::Missing;
                }
            }
        }
        legs.push(li);
    }
    if !legs.iter().any(|l| l.state == LegState::InSync) {
        return Err("no leg holding an in-sync copy was given".into());
    }
    let mut auth = r.authoritative;
    if legs[usize::from(auth)].state != LegState::InSync {
        auth = legs
            .iter()
            .position(|l| l.state == LegState::InSync)
            .unwrap_or(0) as u8;
    }
    // Unclean shutdown: union of the write-intent bitmaps.
    let mut dirty: Option<Vec<u8>> = None;
    for m in metas {
        if !m.label.clean {
            let d = dirty.get_or_insert_with(|| vec![0u8; m.dirty.len()]);
            for (a, b) in d.iter_mut().zip(&m.dirty) {
                *a |= *b;
            }
        }
    }
    let mut name = [0u8; 32];
    let nb = r.name.as_bytes();
    name[..nb.len().min(32)].copy_from_slice(&nb[..nb.len().min(32)]);
    let mut cfg = Config::new(r.legs, r.data_sectors);
    cfg.sector_size = r.sector_size;
    cfg.region_sectors = r.region_sectors;
    cfg.log = LogKind::OnLegs;
    cfg.resync.chunk_sectors = cfg.resync.chunk_sectors.min(r.region_sectors as u32);
    Ok(Assembled {
        cfg,
        mirror_uuid: r.mirror_uuid,
        name,
        name_str: r.name.clone(),
        generation: r.generation,
        seq: metas.iter().map(|m| m.label.seq).max().unwrap_or(0),
        authoritative: auth,
        legs,
        dev_of_slot,
        dirty,
        tracking: metas[newest].tracking.clone(),
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn superblock_roundtrip_and_corruption() {
        let l = Label {
            version: VERSION,
            mirror_uuid: [1; 16],
            leg_uuid: [2; 16],
            index: 1,
            legs: 2,
            leg_uuids: vec![[3; 16], [2; 16]],
            leg_states: vec![LegState::InSync, LegState::Rebuilding],
            rebuild: vec![
                Rebuild {
                    checkpoint: 0,
                    full: false,
                },
                Rebuild {
                    checkpoint: 7,
                    full: true,
                },
            ],
            generation: 9,
            seq: 11,
            authoritative: 0,
            data_sectors: 1000,
            sector_size: 512,
            region_sectors: 64,
            clean: false,
            name: "m".into(),
        };
        let mut b = encode(&l);
        match decode(&b) {
            Slot::Good(d) => assert_eq!(d, l),
            _ => panic!("did not decode"),
        }
        b[200] ^= 1;
        assert!(matches!(decode(&b), Slot::Bad(_)));
        assert!(matches!(decode(&[0u8; SLOT_BYTES]), Slot::Blank));
    }
}
