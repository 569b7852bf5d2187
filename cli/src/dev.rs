//! Leg devices: a regular file or a block device, optionally wrapped in fault injection
//! (`error:PATH`, `flakey:PATH:UP:DOWN`) for tests.
use dmirror::IoError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Fault injection applied to the I/O the mirror issues (not to the metadata reads of
/// assembly, so a faulty leg can still be identified by its label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every I/O fails with `IoError::Io` (the leg becomes Failed).
    Error,
    /// Works `up` seconds, then every I/O fails with `IoError::Gone` for `down` seconds (the
    /// device dropped off and came back: the leg becomes Missing), repeating.
    Flakey {
        up: u64,
        down: u64,
    },
}

/// A leg as written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegSpec {
    pub path: PathBuf,
    pub fault: Fault,
    /// The argument as given, for messages.
    pub text: String,
}

impl LegSpec {
    pub fn parse(arg: &str) -> Result<LegSpec, String> {
        let text = arg.to_string();
        if let Some(rest) = arg.strip_prefix("error:") {
            if rest.is_empty() {
                return Err(format!("leg '{arg}': error: needs a path"));
            }
            return Ok(LegSpec {
                path: rest.into(),
                fault: Fault::Error,
                text,
            });
        }
        if let Some(rest) = arg.strip_prefix("flakey:") {
            // flakey:PATH:UP:DOWN; the path may itself contain ':'.
            let mut it = rest.rsplitn(3, ':');
            let down = it.next();
            let up = it.next();
            let path = it.next();
            let (Some(path), Some(up), Some(down)) = (path, up, down) else {
                return Err(format!("leg '{arg}': expected flakey:PATH:UP:DOWN"));
            };
            let up: u64 = up
                .parse()
                .map_err(|_| format!("leg '{arg}': UP must be a whole number of seconds"))?;
            let down: u64 = down
                .parse()
                .map_err(|_| format!("leg '{arg}': DOWN must be a whole number of seconds"))?;
            if path.is_empty() || up + down == 0 {
                return Err(format!(
                    "leg '{arg}': expected flakey:PATH:UP:DOWN with UP+DOWN > 0"
                ));
            }
            return Ok(LegSpec {
                path: path.into(),
                fault: Fault::Flakey { up, down },
                text,
            });
        }
        if arg.is_empty() {
            return Err("empty leg path".into());
        }
        Ok(LegSpec {
            path: arg.into(),
            fault: Fault::None,
            text,
        })
    }
}

/// An open leg.
pub struct Dev {
    pub file: File,
    pub path: PathBuf,
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    pub is_block: bool,
    /// A regular file on tmpfs or ramfs: its reads and writes copy to and from memory and never
    /// wait for a device, so the mirror's thread may do small ones itself (see `try_*_inline`).
    pub memory_backed: bool,
    pub fault: Fault,
    start: Instant,
}

const TMPFS_MAGIC: u32 = 0x0102_1994;
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// Is the open regular file on a memory file system (tmpfs, ramfs)?
fn on_memory_fs(file: &File) -> bool {
    // SAFETY: a zeroed statfs is valid; fstatfs fills it for an open descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    // f_type's width differs between targets; the magic numbers are 32-bit.
    let t = st.f_type as u32;
    t == TMPFS_MAGIC || t == RAMFS_MAGIC
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn os_err(e: &std::io::Error) -> String {
    let s = e.to_string();
    // "No such file or directory (os error 2)" -> "No such file or directory"
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl Dev {
    /// Open a leg. `write` opens it read-write; `direct` adds O_DIRECT.
    pub fn open(spec: &LegSpec, write: bool) -> Result<Dev, String> {
        Self::open_path(&spec.path, spec.fault, write, &spec.text)
    }

    pub fn open_path(path: &Path, fault: Fault, write: bool, name: &str) -> Result<Dev, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("cannot open leg {}: {}", path.display(), os_err(&e)))?;
        let md = file
            .metadata()
            .map_err(|e| format!("cannot stat leg {}: {}", path.display(), os_err(&e)))?;
        let ft = md.file_type();
        let (bytes, is_block) = if ft.is_block_device() {
            let mut size: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
            let rc =
                unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                return Err(format!(
                    "cannot get the size of {}: {}",
                    path.display(),
                    os_err(&e)
                ));
            }
            (size, true)
        } else if ft.is_file() {
            (md.len(), false)
        } else {
            return Err(format!(
                "leg {} is neither a regular file nor a block device",
                path.display()
            ));
        };
        let memory_backed = !is_block && on_memory_fs(&file);
        Ok(Dev {
            file,
            path: path.to_path_buf(),
            name: name.to_string(),
            bytes,
            is_block,
            memory_backed,
            fault,
            start: Instant::now(),
        })
    }

    /// Would an I/O issued now fail by fault injection?
    pub fn injected(&self) -> Option<IoError> {
        match self.fault {
            Fault::None => None,
            Fault::Error => Some(IoError::Io),
            Fault::Flakey { up, down } => {
                let period = Duration::from_secs(up + down).as_millis().max(1);
                let t = self.start.elapsed().as_millis() % period;
                if t >= Duration::from_secs(up).as_millis() {
                    Some(IoError::Gone)
                } else {
                    None
                }
            }
        }
    }

    /// Plain reads and writes, no fault injection (assembly, label, check).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), String> {
        self.file.read_exact_at(buf, off).map_err(|e| {
            format!(
                "read of {} at byte {off} failed: {}",
                self.path.display(),
                os_err(&e)
            )
        })
    }

    pub fn write_at(&self, buf: &[u8], off: u64) -> Result<(), String> {
        self.file.write_all_at(buf, off).map_err(|e| {
            format!(
                "write to {} at byte {off} failed: {}",
                self.path.display(),
                os_err(&e)
            )
        })
    }

    pub fn sync(&self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("flush of {} failed: {}", self.path.display(), os_err(&e)))
    }

    /// The mirror's I/O: fault injection, then the device.
    pub fn io_read(&self, buf: &mut [u8], off: u64) -> Result<(), IoError> {
        if let Some(e) = self.injected() {
            return Err(e);
        }
        self.file.read_exact_at(buf, off).map_err(map_io)
    }

    pub fn io_write(&self, buf: &[u8], off: u64, fua: bool) -> Result<(), IoError> {
        if let Some(e) = self.injected() {
            return Err(e);
        }
        self.file.write_all_at(buf, off).map_err(map_io)?;
        if fua {
            self.file.sync_data().map_err(map_io)?;
        }
        Ok(())
    }

    /// A read the caller's thread may do itself because it cannot wait for a device: fault
    /// injection applies as in `io_read`; a leg on a memory file system is read directly; any
    /// other leg (a regular file on a disk, a block device) only if the data is in the page cache
    /// (`RWF_NOWAIT`: the kernel refuses rather than start device I/O). None: nothing was
    /// decided (the data may be partly in `buf`), do the read with `io_read` on a worker.
    pub fn try_read_inline(&self, buf: &mut [u8], off: u64) -> Option<Result<(), IoError>> {
        if let Some(e) = self.injected() {
            return Some(Err(e));
        }
        if self.memory_backed {
            return Some(self.file.read_exact_at(buf, off).map_err(map_io));
        }
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which is live and writable for its length.
        let n = unsafe {
            libc::preadv2(
                self.file.as_raw_fd(),
                &iov,
                1,
                off as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        // Errors (EAGAIN: not cached; EOPNOTSUPP: no RWF_NOWAIT here; real I/O errors) and short
        // reads all go the ordinary way, which reports them as before.
        (n >= 0 && n as usize == buf.len()).then_some(Ok(()))
    }

    /// A write the caller's thread may do itself: only on a memory file system (buffered writes
    /// elsewhere may wait for writeback throttling, and FUA for the device, as long as it takes;
    /// on tmpfs/ramfs fdatasync has nothing to write back). Fault injection applies as in
    /// `io_write`. None: use a worker.
    pub fn try_write_inline(&self, buf: &[u8], off: u64, fua: bool) -> Option<Result<(), IoError>> {
        if let Some(e) = self.injected() {
            return Some(Err(e));
        }
        if !self.memory_backed {
            return None;
        }
        Some(self.io_write(buf, off, fua))
    }

    /// A flush the caller's thread may do itself: only on a memory file system, where there is
    /// no device to wait for. None: use a worker.
    pub fn try_flush_inline(&self) -> Option<Result<(), IoError>> {
        if let Some(e) = self.injected() {
            return Some(Err(e));
        }
        if !self.memory_backed {
            return None;
        }
        Some(self.io_flush())
    }

    pub fn io_flush(&self) -> Result<(), IoError> {
        if let Some(e) = self.injected() {
            return Err(e);
        }
        self.file.sync_data().map_err(map_io)
    }

    pub fn io_discard(&self, off: u64, len: u64) -> Result<(), IoError> {
        if let Some(e) = self.injected() {
            return Err(e);
        }
        if self.is_block {
            return Err(IoError::NotSupported);
        }
        // SAFETY: plain syscall on an open descriptor.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Err(IoError::NotSupported),
                _ => Err(map_io(e)),
            }
        }
    }
}

fn map_io(e: std::io::Error) -> IoError {
    match e.raw_os_error() {
        Some(libc::ENXIO) | Some(libc::ENODEV) => IoError::Gone,
        Some(libc::EOPNOTSUPP) => IoError::NotSupported,
        _ => IoError::Io,
    }
}

/// 16 random bytes from the kernel.
pub fn random_uuid() -> Result<[u8; 16], String> {
    let mut u = [0u8; 16];
    let f = File::open("/dev/urandom")
        .map_err(|e| format!("cannot open /dev/urandom: {}", os_err(&e)))?;
    f.read_exact_at(&mut u, 0)
        .map_err(|e| format!("cannot read /dev/urandom: {}", os_err(&e)))?;
    // RFC 4122 version 4, variant 1.
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

pub fn uuid_str(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert_eq!(LegSpec::parse("/a").unwrap().fault, Fault::None);
        assert_eq!(LegSpec::parse("error:/a").unwrap().fault, Fault::Error);
        let f = LegSpec::parse("flakey:/a:b:3:4").unwrap();
        assert_eq!(f.path, PathBuf::from("/a:b"));
        assert_eq!(f.fault, Fault::Flakey { up: 3, down: 4 });
        assert!(LegSpec::parse("flakey:/a:x:4").is_err());
        assert!(LegSpec::parse("flakey:/a").is_err());
        assert!(LegSpec::parse("error:").is_err());
    }

    #[test]
    fn inline_io_only_where_it_cannot_wait() {
        // /dev/shm is tmpfs on Linux; skip (loudly) where it is not.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("\n*** SKIPPED: no /dev/shm ***\n");
            return;
        }
        let p = shm.join(format!("dmirror-inline-{}", std::process::id()));
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let d = Dev::open_path(&p, Fault::None, true, "m").unwrap();
        assert!(
            d.memory_backed,
            "a file in /dev/shm should count as memory-backed"
        );
        let data = [0x5au8; 4096];
        assert_eq!(d.try_write_inline(&data, 8192, false), Some(Ok(())));
        // FUA and flushes too: tmpfs has nothing to write back.
        assert_eq!(d.try_write_inline(&data, 8192, true), Some(Ok(())));
        assert_eq!(d.try_flush_inline(), Some(Ok(())));
        let mut back = [0u8; 4096];
        assert_eq!(d.try_read_inline(&mut back, 8192), Some(Ok(())));
        assert_eq!(back, data);
        // Past the end: a failed read, as io_read reports it.
        assert_eq!(
            d.try_read_inline(&mut back, 1 << 20),
            Some(Err(IoError::Io))
        );
        // Fault injection applies inline exactly as on the workers.
        let e = Dev::open_path(&p, Fault::Error, true, "e").unwrap();
        assert_eq!(e.try_write_inline(&data, 0, false), Some(Err(IoError::Io)));
        assert_eq!(e.try_read_inline(&mut back, 0), Some(Err(IoError::Io)));
        assert_eq!(e.try_flush_inline(), Some(Err(IoError::Io)));
        let f = Dev::open_path(&p, Fault::Flakey { up: 0, down: 5 }, true, "f").unwrap();
        assert_eq!(f.try_read_inline(&mut back, 0), Some(Err(IoError::Gone)));
        let _ = std::fs::remove_file(&p);

        // A file on a disk file system: writes always go to a worker.
        let q = std::env::temp_dir().join(format!("dmirror-inline-{}", std::process::id()));
        std::fs::File::create(&q).unwrap().set_len(1 << 20).unwrap();
        let d = Dev::open_path(&q, Fault::None, true, "d").unwrap();
        if !d.memory_backed {
            assert_eq!(d.try_write_inline(&data, 0, false), None);
            assert_eq!(d.try_write_inline(&data, 0, true), None);
            assert_eq!(d.try_flush_inline(), None);
            // A read is inline only if the kernel could serve it without waiting; when it is,
            // it must have read the right bytes.
            d.write_at(&data, 0).unwrap();
            let mut b = [0u8; 4096];
            if d.try_read_inline(&mut b, 0) == Some(Ok(())) {
                assert_eq!(b, data);
            }
        }
        let _ = std::fs::remove_file(&q);
    }

    #[test]
    fn uuid_format() {
        let u = [0x12u8; 16];
        assert_eq!(uuid_str(&u), "12121212-1212-1212-1212-121212121212");
    }
}
