//! On-disk format (placeholder; see docs/FORMAT.md once written).

/// Default region size in sectors for a mirror of `data_sectors` sectors of `sector_size` bytes:
/// 1024 sectors (512 KiB with 512-byte sectors), doubled until the bitmap fits in 128 KiB.
pub fn default_region_sectors(data_sectors: u64, sector_size: u32) -> u64 {
    let _ = sector_size;
    let mut region: u64 = 1024;
    while data_sectors.div_ceil(region) > 128 * 1024 * 8 {
        region = region.saturating_mul(2);
    }
    region
}
