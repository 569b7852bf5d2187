//! What the simulator writes into every sector: the id of the write and the sector's own index,
//! plus filler derived from both, so a read can be checked exactly (right write, right place,
//! not torn inside a sector).

/// Content of a sector nobody wrote since the mirror was created (identical on in-sync legs).
pub const INITIAL: u64 = 0;
/// Marks a sector whose content is undefined (discarded and not rewritten): any data is fine.
pub const ANY: u64 = u64::MAX;
/// Leg-specific junk on a leg that is not in sync (never valid in a read).
pub fn junk(leg: usize) -> u64 {
    0x4A55_4E4B_0000_0000 | leg as u64
}

const MAGIC: u64 = 0x444D_5349_4D44_4154; // "DMSIMDAT"

fn filler(id: u64, sector: u64, i: u64) -> u64 {
    let mut z = id ^ sector.rotate_left(32) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 29)
}

/// Fill `buf` (one sector) with the pattern of write `id` at data sector `sector`.
pub fn encode(buf: &mut [u8], id: u64, sector: u64) {
    let words = buf.len() / 8;
    for i in 0..words {
        let w = match i {
            0 => MAGIC,
            1 => id,
            2 => sector,
            _ => filler(id, sector, i as u64),
        };
        buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
}

/// The (write id, sector) a sector holds, if it is an intact pattern.
pub fn decode(buf: &[u8]) -> Option<(u64, u64)> {
    let word = |i: usize| u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
    if buf.len() < 24 || word(0) != MAGIC {
        return None;
    }
    let (id, sector) = (word(1), word(2));
    for i in 3..buf.len() / 8 {
        if word(i) != filler(id, sector, i as u64) {
            return None;
        }
    }
    Some((id, sector))
}

/// Human-readable description of a sector's content for traces.
pub fn describe(buf: &[u8]) -> String {
    match decode(buf) {
        Some((id, s)) if id == INITIAL => format!("initial@{s}"),
        Some((id, s)) if id & 0xFFFF_FFFF_0000_0000 == junk(0) => {
            format!("junk(leg {})@{s}", id & 0xFFFF)
        }
        Some((id, s)) => format!("w{id}@{s}"),
        None if buf.iter().all(|&b| b == 0) => "zeros".to_string(),
        None => format!(
            "garbage({:02x}{:02x}{:02x}{:02x}..)",
            buf[0], buf[1], buf[2], buf[3]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_detects_damage() {
        let mut b = vec![0u8; 512];
        encode(&mut b, 77, 12);
        assert_eq!(decode(&b), Some((77, 12)));
        b[300] ^= 1;
        assert_eq!(decode(&b), None);
        assert_eq!(decode(&[0u8; 512]), None);
    }
}
