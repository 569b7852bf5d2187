//! The CLI's view of the on-disk format (`dmirror::format`) and assembly (`dmirror::assemble`):
//! reading a leg's metadata, labelling, and turning a set of legs into what `Mirror::new` needs.
use crate::dev::Dev;
use dmirror::assemble::{self, Assembly, LegRead};
use dmirror::format::{self, DiskLeg, DiskLegState, FormatError, Superblock, SB_BYTES};
use dmirror::{Config, Init, LegInit, LegState, LogKind, Rebuild, MAX_LEGS};

/// Sector size used for legs this tool labels, and to find the superblock slots (for sector
/// sizes up to 4096 the slots sit at the same byte offsets whatever the sector size).
pub const SECTOR: u32 = 512;

/// Bytes one resync copy moves (capped at a region).
const RESYNC_CHUNK_BYTES: u32 = 1 << 20;

/// The newest valid superblock of one leg, in the terms the CLI prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub version: u32,
    pub mirror_uuid: [u8; 16],
    pub leg_uuid: [u8; 16],
    pub index: u8,
    pub legs: u8,
    pub leg_uuids: Vec<[u8; 16]>,
    pub leg_states: Vec<LegState>,
    pub leg_sectors: Vec<u64>,
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

    fn from_sb(sb: &Superblock) -> Label {
        let n = usize::from(sb.nlegs);
        let legs = &sb.legs[..n];
        Label {
            version: format::FORMAT_VERSION,
            mirror_uuid: sb.mirror_uuid,
            leg_uuid: sb.leg_uuid(),
            index: sb.leg_index,
            legs: sb.nlegs,
            leg_uuids: legs.iter().map(|l| l.uuid).collect(),
            leg_states: legs.iter().map(|l| LegState::from(l.state)).collect(),
            leg_sectors: legs.iter().map(|l| l.sectors).collect(),
            rebuild: legs
                .iter()
                .map(|l| Rebuild {
                    checkpoint: l.checkpoint,
                    full: l.full,
                })
                .collect(),
            generation: sb.generation,
            seq: sb.seq,
            authoritative: sb.authoritative,
            data_sectors: sb.data_sectors,
            sector_size: sb.sector_size,
            region_sectors: sb.region_sectors,
            clean: sb.clean,
            name: String::from_utf8_lossy(&sb.name)
                .trim_end_matches('\0')
                .to_string(),
        }
    }
}

/// Everything read from one leg's metadata area.
#[derive(Clone, Debug)]
pub struct LegMeta {
    pub label: Label,
    pub sb: Superblock,
    /// Which superblock slot held the newest copy (`seq & 1`).
    pub slot: usize,
    /// The raw slots, for assembly.
    slot_bytes: [Vec<u8>; 2],
    /// This leg's write-intent bitmap (bit r of byte r/8, LSB first).
    pub dirty: Vec<u8>,
    /// This leg's copy of the tracking bitmaps, per leg slot (None when empty).
    pub tracking: Vec<Option<Vec<u8>>>,
}

pub fn count_bits(b: &[u8]) -> u64 {
    b.iter().map(|x| u64::from(x.count_ones())).sum()
}

/// Region size to label with (sectors) for a leg of `leg_bytes`.
pub fn default_region_sectors(leg_bytes: u64, sector_size: u32) -> u64 {
    format::default_region_sectors(leg_bytes / u64::from(sector_size), sector_size)
}

/// Largest data size a leg of `leg_bytes` can carry, in sectors (None if none).
pub fn max_data_sectors(leg_bytes: u64, sector_size: u32, region_sectors: u64) -> Option<u64> {
    let d = format::max_data_sectors(
        leg_bytes / u64::from(sector_size),
        sector_size,
        region_sectors,
    );
    (d > 0).then_some(d)
}

/// Byte offsets of the two superblock slots on a leg of `leg_bytes`.
pub fn slot_offsets(leg_bytes: u64, sector_size: u32) -> [u64; 2] {
    let ss = u64::from(sector_size);
    let p = format::slot_positions(leg_bytes / ss, sector_size);
    [p[0] * ss, p[1] * ss]
}

fn read_slots(dev: &Dev) -> Result<Option<[Vec<u8>; 2]>, String> {
    let offs = slot_offsets(dev.bytes, SECTOR);
    if offs == [0, 0] {
        return Ok(None);
    }
    let mut out = [vec![0u8; SB_BYTES], vec![0u8; SB_BYTES]];
    for (b, off) in out.iter_mut().zip(offs) {
        dev.read_at(b, off)?;
    }
    Ok(Some(out))
}

fn read_sectors(dev: &Dev, sector: u64, sectors: u64, ss: u32) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; (sectors * u64::from(ss)) as usize];
    dev.read_at(&mut b, sector * u64::from(ss))?;
    Ok(b)
}

/// Read a leg's metadata. `Ok(None)`: no dmirror metadata at all (neither slot has the magic).
/// `Err`: metadata present but unusable (corrupt, newer version...), with the reason.
pub fn probe(dev: &Dev) -> Result<Option<LegMeta>, String> {
    let Some(slots) = read_slots(dev)? else {
        return Ok(None);
    };
    let d0 = Superblock::decode(&slots[0]);
    let d1 = Superblock::decode(&slots[1]);
    let absent = |r: &Result<Superblock, FormatError>| {
        matches!(r, Err(FormatError::Blank | FormatError::BadMagic))
    };
    if absent(&d0) && absent(&d1) {
        return probe_log_device(dev);
    }
    let sb = format::newest(d0, d1)
        .map_err(|e| format!("{}: corrupt dmirror metadata: {e}", dev.name))?;
    let ss = sb.sector_size;
    let own_sectors = dev.bytes / u64::from(ss);
    if sb.own().sectors != own_sectors {
        return Err(format!(
            "{}: the device has {own_sectors} sectors but its metadata records {} (was it resized?)",
            dev.name,
            sb.own().sectors
        ));
    }
    let lay = sb
        .layout()
        .map_err(|e| format!("{}: corrupt dmirror metadata: {e}", dev.name))?;
    let regions = lay.regions;
    let dirty = read_sectors(dev, lay.bitmap_start, lay.bitmap_sectors, ss)?;
    format::check_bitmap(&dirty, regions)
        .map_err(|e| format!("{}: corrupt write-intent bitmap: {e}", dev.name))?;
    let mut tracking = Vec::new();
    for k in 0..sb.nlegs {
        let Some(at) = lay.tracking(k) else { break };
        let t = read_sectors(dev, at, lay.bitmap_sectors, ss)?;
        format::check_bitmap(&t, regions)
            .map_err(|e| format!("{}: corrupt tracking bitmap of leg {k}: {e}", dev.name))?;
        tracking.push(if count_bits(&t) > 0 { Some(t) } else { None });
    }
    Ok(Some(LegMeta {
        label: Label::from_sb(&sb),
        sb,
        slot: (sb.seq & 1) as usize,
        slot_bytes: slots,
        dirty,
        tracking,
    }))
}

/// A device without leg metadata may be the disk log device of a dm mirror (dm_target_mirror's
/// `disk` log: its superblocks sit at the START of the device, docs/FORMAT.md section 9). Such a
/// device is not a leg and must never be used as one: say what it is.
fn probe_log_device(dev: &Dev) -> Result<Option<LegMeta>, String> {
    if dev.bytes < 2 * SB_BYTES as u64 {
        return Ok(None);
    }
    let mut slots = [vec![0u8; SB_BYTES], vec![0u8; SB_BYTES]];
    for (b, off) in slots.iter_mut().zip([0, SB_BYTES as u64]) {
        dev.read_at(b, off)?;
    }
    match format::decode_newest_log(&slots[0], &slots[1]) {
        Ok(sb) => Err(format!(
            "{}: {} (mirror {}, {} legs, generation {})",
            dev.name,
            FormatError::LogDevice,
            format::UuidDisplay(&sb.mirror_uuid),
            sb.nlegs,
            sb.generation
        )),
        Err(_) => Ok(None),
    }
}

/// Write fresh metadata on `devs` (legs 0..n of a new mirror) holding `data_sectors` of data.
/// Legs 1.. are marked for a full rebuild from leg 0 when `resync`, in sync otherwise. The
/// mirror has `slots` leg slots (at least one per device); the spare ones start empty.
pub fn write_labels(
    devs: &[Dev],
    name: &str,
    region_sectors: u64,
    data_sectors: u64,
    resync: bool,
    slots: usize,
) -> Result<(), String> {
    let mirror_uuid = crate::dev::random_uuid()?;
    let mut legs = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        let rebuild = resync && i > 0;
        legs.push(DiskLeg {
            uuid: crate::dev::random_uuid()?,
            state: if rebuild {
                DiskLegState::Rebuilding
            } else {
                DiskLegState::InSync
            },
            full: rebuild,
            checkpoint: 0,
            sectors: d.bytes / u64::from(SECTOR),
            since: 0,
        });
    }
    // Spare slots, empty until a leg is added.
    while legs.len() < slots {
        legs.push(DiskLeg::EMPTY);
    }
    let mut nm = [0u8; 32];
    let nb = name.as_bytes();
    if nb.len() > 32 || nb.contains(&0) {
        return Err(format!(
            "name '{name}' must be at most 32 bytes without NUL"
        ));
    }
    nm[..nb.len()].copy_from_slice(nb);
    // Encode everything before writing anything.
    let mut plans = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        let sb = Superblock::new(
            mirror_uuid,
            nm,
            SECTOR,
            region_sectors,
            data_sectors,
            &legs,
            i as u8,
            0,
        )
        .map_err(|e| format!("{}: {e}", d.name))?;
        let lay = sb.layout().map_err(|e| format!("{}: {e}", d.name))?;
        let mut block = vec![0u8; SB_BYTES];
        sb.encode(&mut block)
            .map_err(|e| format!("{}: {e}", d.name))?;
        plans.push((lay, block));
    }
    let ss = u64::from(SECTOR);
    for (d, (lay, block)) in devs.iter().zip(plans) {
        // Bitmaps zeroed, slot 1 blank (no older superblock may outrank the new one), slot 0 new.
        let meta_bytes = (lay.slots[0] - lay.meta_start) * ss;
        d.write_at(&vec![0u8; meta_bytes as usize], lay.meta_start * ss)?;
        d.write_at(
            &vec![0u8; (lay.slot_sectors * ss) as usize],
            lay.slots[1] * ss,
        )?;
        let mut slot0 = vec![0u8; (lay.slot_sectors * ss) as usize];
        slot0[..SB_BYTES].copy_from_slice(&block);
        d.write_at(&slot0, lay.slots[0] * ss)?;
        d.sync()?;
    }
    Ok(())
}

/// The result of assembling a set of legs: what `Mirror::new` needs, owned.
pub struct Assembled {
    pub cfg: Config,
    pub mirror_uuid: [u8; 16],
    pub name_str: String,
    pub legs: Vec<LegInit>,
    /// For each leg slot, the index of the given device that fills it.
    pub dev_of_slot: Vec<Option<usize>>,
    /// Devices whose metadata is older than the mirror's (resynced before use).
    pub stale: Vec<usize>,
    asm: Assembly,
    dirty: Option<Vec<u8>>,
    tracking: Vec<Option<Vec<u8>>>,
}

impl Assembled {
    pub fn init(&self) -> Init<'_> {
        let mut tracking = [None; MAX_LEGS];
        for (i, t) in self.tracking.iter().enumerate() {
            tracking[i] = t.as_deref();
        }
        self.asm.init(self.dirty.as_deref(), tracking)
    }
}

/// Assemble legs (each with its metadata). `force` accepts stale legs (they are resynced from
/// the others); `winner` names the leg whose data wins a split brain.
pub fn assemble(
    devs: &[&Dev],
    metas: &[LegMeta],
    force: bool,
    winner: Option<usize>,
) -> Result<Assembled, String> {
    let reads: Vec<LegRead> = devs
        .iter()
        .zip(metas)
        .map(|(d, m)| LegRead {
            label: d.name.as_str(),
            sectors: d.bytes / u64::from(m.sb.sector_size),
            sector_size: m.sb.sector_size,
            slot0: &m.slot_bytes[0],
            slot1: &m.slot_bytes[1],
        })
        .collect();
    let choose = winner.and_then(|i| metas.get(i)).map(|m| m.label.leg_uuid);
    let a = assemble::assemble(&reads, choose).map_err(|e| e.to_string())?;
    let w = &a.winner;
    let n = usize::from(w.nlegs);
    let mut stale = Vec::new();
    for (i, m) in metas.iter().enumerate() {
        let slot = usize::from(a.slot_of_input[i]);
        if m.sb.generation < a.generation && a.legs[slot].state != LegState::InSync {
            if !force {
                return Err(format!(
                    "{} is stale (generation {}, the mirror is at {}): pass --force to resync it from the other legs",
                    devs[i].name, m.sb.generation, a.generation
                ));
            }
            stale.push(i);
        }
    }
    let ss = w.sector_size;
    let regions = a.regions();
    let read_bitmap = |br: assemble::BitmapRead, what: &str| -> Result<Vec<u8>, String> {
        let d = devs[br.input];
        let b = read_sectors(d, br.sector, br.sectors, ss)?;
        format::check_bitmap(&b, regions)
            .map_err(|e| format!("{}: corrupt {what}: {e}", d.name))?;
        Ok(b)
    };
    let mut dirty: Option<Vec<u8>> = None;
    if !a.clean {
        let mut acc = vec![0u8; a.bitmap_bytes() as usize];
        for slot in 0..w.nlegs {
            if let Some(br) = a.dirty_read(slot) {
                let b = read_bitmap(br, "write-intent bitmap")?;
                format::or_into(&mut acc, &b);
            }
        }
        dirty = Some(acc);
    }
    let mut tracking = vec![None; n];
    for (k, t) in tracking.iter_mut().enumerate() {
        if let Some(br) = a.tracking_read(k as u8) {
            *t = Some(read_bitmap(br, "tracking bitmap")?);
        }
    }
    let mut cfg = Config::new(w.nlegs, w.data_sectors);
    cfg.sector_size = ss;
    cfg.region_sectors = w.region_sectors;
    cfg.log = LogKind::OnLegs;
    cfg.read_policy = w.read_policy().unwrap_or_default();
    // Userland has memory to spare: bigger copies, more of them in flight.
    cfg.resync.max_inflight = 8;
    cfg.resync.chunk_sectors =
        (u64::from(RESYNC_CHUNK_BYTES / ss)).clamp(1, w.region_sectors) as u32;
    Ok(Assembled {
        cfg,
        mirror_uuid: w.mirror_uuid,
        name_str: String::from_utf8_lossy(&w.name)
            .trim_end_matches('\0')
            .to_string(),
        legs: a.legs[..n].to_vec(),
        dev_of_slot: a.input_of_slot[..n].to_vec(),
        stale,
        asm: a,
        dirty,
        tracking,
    })
}

#[cfg(test)]
mod log_device_tests {
    use super::*;
    use crate::dev::Fault;

    /// A dm mirror's disk log device is recognised and refused by name, never taken for a
    /// device without metadata (which `label` would then overwrite).
    #[test]
    fn a_disk_log_device_is_refused_as_a_leg() {
        let legs = [
            DiskLeg {
                uuid: [1; 16],
                state: DiskLegState::InSync,
                full: false,
                checkpoint: 0,
                sectors: 1 << 20,
                since: 0,
            },
            DiskLeg {
                uuid: [2; 16],
                state: DiskLegState::InSync,
                full: false,
                checkpoint: 0,
                sectors: 1 << 20,
                since: 0,
            },
        ];
        let mut sb =
            Superblock::new([7; 16], [0; 32], 512, 1024, 4096, &legs, 0, 0).expect("superblock");
        let l = format::log_layout(512, 1024, 4096).expect("layout");
        sb.leg_index = format::LOG_DEVICE_INDEX;
        sb.bitmap_start = l.bitmap_start;
        sb.tracking_start = l.tracking_start;
        sb.seq = 1;
        let mut img = vec![0u8; 64 * 1024];
        sb.encode(&mut img[SB_BYTES..2 * SB_BYTES]).expect("encode");
        let path = std::env::temp_dir().join(format!("dmirror-logdev-{}", std::process::id()));
        std::fs::write(&path, &img).expect("write image");
        let dev = Dev::open_path(&path, Fault::None, false, "logdev").expect("open");
        let r = probe(&dev);
        let _ = std::fs::remove_file(&path);
        let e = r.expect_err("a log device must be refused");
        assert!(e.contains("disk log device"), "{e}");
        // A blank device is still "no metadata".
        let blank = std::env::temp_dir().join(format!("dmirror-blank-{}", std::process::id()));
        std::fs::write(&blank, vec![0u8; 64 * 1024]).expect("write");
        let dev = Dev::open_path(&blank, Fault::None, false, "blank").expect("open");
        let r = probe(&dev);
        let _ = std::fs::remove_file(&blank);
        assert!(matches!(r, Ok(None)));
    }
}
