//! NBD server: fixed newstyle handshake, simple replies (protocol constants from the NBD
//! protocol specification).
use crate::engine::{Msg, ParentReq, Reply, ReplySink};
use dmirror::{IoError, ParentOp};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::Sender;
use std::sync::Arc;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;
const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
const FLAG_C_NO_ZEROES: u32 = 1 << 1;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TFLAG_HAS_FLAGS: u16 = 1 << 0;
const TFLAG_SEND_FLUSH: u16 = 1 << 2;
const TFLAG_SEND_FUA: u16 = 1 << 3;
const TFLAG_SEND_TRIM: u16 = 1 << 5;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_FLAG_FUA: u16 = 1 << 0;

const EIO: u32 = 5;
const EINVAL: u32 = 22;
const EOPNOTSUPP: u32 = 95;
const ESHUTDOWN: u32 = 108;

/// Largest request payload accepted (and advertised as the maximum block size).
pub const MAX_REQUEST: u32 = 32 << 20;

/// Per connection, requests in flight and their data bytes are bounded: the reader stops taking
/// requests off the socket until replies are written (memory stays bounded whatever the client).
const MAX_INFLIGHT: u64 = 512;
const MAX_INFLIGHT_BYTES: u64 = 256 << 20;

#[derive(Default)]
struct Inflight {
    /// Requests, bytes, bytes per cookie, threads waiting on `cv` (so that a reply wakes no
    /// one, and makes no futex call, when nobody waits: the common case).
    state: std::sync::Mutex<(u64, u64, std::collections::HashMap<u64, u64>, u32)>,
    cv: std::sync::Condvar,
    /// The writer is gone: nothing will be released any more.
    closed: std::sync::atomic::AtomicBool,
}

impl Inflight {
    /// Wait for room for a request of `bytes` (always room for one), then count it.
    fn acquire(&self, cookie: u64, bytes: u64) {
        let Ok(mut g) = self.state.lock() else { return };
        while g.0 > 0
            && (g.0 >= MAX_INFLIGHT || g.1 + bytes > MAX_INFLIGHT_BYTES)
            && !self.closed.load(std::sync::atomic::Ordering::SeqCst)
        {
            g.3 += 1;
            g = match self.cv.wait(g) {
                Ok(g) => g,
                Err(_) => return,
            };
            g.3 -= 1;
        }
        g.0 += 1;
        g.1 += bytes;
        *g.2.entry(cookie).or_insert(0) += bytes;
    }

    /// Wait until every request counted has been answered (or the socket broke).
    fn wait_idle(&self) {
        let Ok(mut g) = self.state.lock() else { return };
        while g.0 > 0 && !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            g.3 += 1;
            g = match self.cv.wait(g) {
                Ok(g) => g,
                Err(_) => return,
            };
            g.3 -= 1;
        }
    }

    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _g = self.state.lock();
        self.cv.notify_all();
    }

    fn release(&self, cookie: u64) {
        let Ok(mut g) = self.state.lock() else { return };
        let bytes = g.2.remove(&cookie).unwrap_or(0);
        g.0 = g.0.saturating_sub(1);
        g.1 = g.1.saturating_sub(bytes);
        if g.3 > 0 {
            self.cv.notify_all();
        }
    }
}

/// What the server exports.
#[derive(Clone)]
pub struct Export {
    pub name: String,
    pub size: u64,
    pub sector_size: u32,
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn raw_fd(&self) -> std::os::unix::io::RawFd {
        use std::os::unix::io::AsRawFd;
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Accept connections forever, one thread pair per connection.
pub fn accept_loop(l: Listener, export: Export, engine: Sender<Msg>) {
    loop {
        let s = match &l {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        match s {
            Ok(s) => {
                let export = export.clone();
                let engine = engine.clone();
                std::thread::spawn(move || {
                    let _ = connection(s, &export, engine);
                });
            }
            Err(e) => {
                eprintln!("dmirror: accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn rd_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn rd_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn opt_reply(w: &mut impl Write, opt: u32, typ: u32, data: &[u8]) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    w.write_all(&b)?;
    w.flush()
}

fn tflags() -> u16 {
    TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_TRIM
}

fn name_ok(export: &Export, name: &[u8]) -> bool {
    name.is_empty() || name == export.name.as_bytes()
}

/// Parse the payload of NBD_OPT_INFO/GO: name and requested info types.
fn parse_info(data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let nl = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let name = data.get(4..4 + nl)?;
    let rest = data.get(4 + nl..)?;
    let n = usize::from(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?));
    let reqs = rest.get(2..)?;
    if reqs.len() != n * 2 {
        return None;
    }
    Some((
        name,
        reqs.chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    ))
}

/// Run the handshake. `Ok(true)`: go to transmission.
fn handshake(s: &mut Stream, export: &Export) -> std::io::Result<bool> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let cflags = rd_u32(s)?;
    if cflags & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Ok(false);
    }
    let no_zeroes = cflags & FLAG_C_NO_ZEROES != 0;
    loop {
        if rd_u64(s)? != IHAVEOPT {
            return Ok(false);
        }
        let opt = rd_u32(s)?;
        let len = rd_u32(s)?;
        if len > 64 * 1024 {
            return Ok(false);
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        match opt {
            OPT_EXPORT_NAME => {
                if !name_ok(export, &data) {
                    return Ok(false);
                }
                let mut b = Vec::new();
                b.extend_from_slice(&export.size.to_be_bytes());
                b.extend_from_slice(&tflags().to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&b)?;
                return Ok(true);
            }
            OPT_ABORT => {
                let _ = opt_reply(s, opt, REP_ACK, &[]);
                return Ok(false);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    opt_reply(s, opt, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                    continue;
                }
                let mut d = Vec::new();
                d.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                d.extend_from_slice(export.name.as_bytes());
                opt_reply(s, opt, REP_SERVER, &d)?;
                opt_reply(s, opt, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let Some((name, _reqs)) = parse_info(&data) else {
                    opt_reply(s, opt, REP_ERR_INVALID, b"malformed request")?;
                    continue;
                };
                if !name_ok(export, name) {
                    opt_reply(s, opt, REP_ERR_UNKNOWN, b"no such export")?;
                    continue;
                }
                let mut d = Vec::new();
                d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                d.extend_from_slice(&export.size.to_be_bytes());
                d.extend_from_slice(&tflags().to_be_bytes());
                opt_reply(s, opt, REP_INFO, &d)?;
                // Block sizes: requests must be whole sectors.
                let mut d = Vec::new();
                d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                d.extend_from_slice(&export.sector_size.to_be_bytes());
                d.extend_from_slice(&4096u32.max(export.sector_size).to_be_bytes());
                d.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                opt_reply(s, opt, REP_INFO, &d)?;
                opt_reply(s, opt, REP_ACK, &[])?;
                if opt == OPT_GO {
                    return Ok(true);
                }
            }
            _ => opt_reply(s, opt, REP_ERR_UNSUP, b"option not supported")?,
        }
    }
}

fn errno(e: IoError) -> u32 {
    match e {
        IoError::Invalid => EINVAL,
        IoError::NotSupported => EOPNOTSUPP,
        IoError::Gone => ESHUTDOWN,
        IoError::Io | IoError::NoLegs => EIO,
    }
}

/// The output side of a connection. The mirror's thread writes a reply straight into the socket
/// when nothing is queued and the socket takes it at once (MSG_DONTWAIT): no thread hop on the
/// common path. Whatever does not fit is queued for the connection's writer thread, which writes
/// it blocking; replies never overtake each other.
struct ConnOut {
    fd: std::os::unix::io::RawFd,
    state: std::sync::Mutex<OutState>,
    cv: std::sync::Condvar,
    inflight: Arc<Inflight>,
}

/// A reply not (fully) written yet: header, data, bytes already written, cookie.
type Pending = ([u8; 16], Option<Vec<u8>>, usize, u64);

#[derive(Default)]
struct OutState {
    /// Replies (header, data, bytes already written) waiting for the writer.
    queue: std::collections::VecDeque<Pending>,
    /// The writer is writing a reply taken off the queue.
    busy: bool,
    /// The socket failed: replies are dropped.
    closed: bool,
    /// The reader is done and every reply is out: the writer may stop.
    finished: bool,
}

impl ConnOut {
    /// Non-blocking write of `hdr` then `data`, from byte `skip` on. Bytes written, or None on
    /// a socket error (EAGAIN is 0 bytes).
    fn try_write(&self, hdr: &[u8; 16], data: &[u8], skip: usize) -> Option<usize> {
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            },
        ];
        let mut first = 0;
        let mut skip = skip;
        if skip >= hdr.len() {
            skip -= hdr.len();
            first = 1;
        }
        iov[first].iov_base = iov[first].iov_base.wrapping_add(skip);
        iov[first].iov_len -= skip;
        // SAFETY: a zeroed msghdr is valid; the iovecs point into live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov[first..].as_mut_ptr();
        msg.msg_iovlen = (2 - first) as _;
        // SAFETY: sendmsg on an open socket with a valid msghdr.
        let n = unsafe { libc::sendmsg(self.fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Some(n as usize);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Some(0),
            _ => None,
        }
    }

    fn finish(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.finished = true;
        }
        self.cv.notify_all();
    }

    /// The writer thread: write queued replies, blocking, until finished or closed.
    fn writer(&self) {
        loop {
            let (hdr, data, skip, cookie) = {
                let Ok(mut g) = self.state.lock() else { return };
                loop {
                    if g.closed {
                        return;
                    }
                    if let Some(item) = g.queue.pop_front() {
                        g.busy = true;
                        break item;
                    }
                    if g.finished {
                        return;
                    }
                    g = match self.cv.wait(g) {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                }
            };
            let d = data.as_deref().unwrap_or(&[]);
            let total = hdr.len() + d.len();
            let mut done = skip;
            let mut ok = true;
            while done < total {
                match self.try_write(&hdr, d, done) {
                    Some(0) => {
                        // Wait for room: poll the socket for writing.
                        let mut p = libc::pollfd {
                            fd: self.fd,
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe { libc::poll(&mut p, 1, 1000) };
                    }
                    Some(n) => done += n,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            self.inflight.release(cookie);
            let Ok(mut g) = self.state.lock() else { return };
            g.busy = false;
            if !ok {
                g.closed = true;
                self.inflight.close();
                return;
            }
        }
    }
}

impl ReplySink for ConnOut {
    fn send(&self, r: Reply) {
        let err = match r.result {
            Ok(()) => 0,
            Err(e) => errno(e),
        };
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        hdr[4..8].copy_from_slice(&err.to_be_bytes());
        hdr[8..16].copy_from_slice(&r.cookie.to_be_bytes());
        let data = if err == 0 { r.data } else { None };
        let Ok(mut g) = self.state.lock() else { return };
        if g.closed {
            drop(g);
            self.inflight.release(r.cookie);
            return;
        }
        let mut skip = 0;
        if !g.busy && g.queue.is_empty() {
            let d = data.as_deref().unwrap_or(&[]);
            match self.try_write(&hdr, d, 0) {
                Some(n) if n == hdr.len() + d.len() => {
                    drop(g);
                    self.inflight.release(r.cookie);
                    return;
                }
                Some(n) => skip = n,
                None => {
                    g.closed = true;
                    drop(g);
                    self.inflight.release(r.cookie);
                    self.inflight.close();
                    self.cv.notify_all();
                    return;
                }
            }
        }
        g.queue.push_back((hdr, data, skip, r.cookie));
        drop(g);
        self.cv.notify_all();
    }
}

fn connection(mut s: Stream, export: &Export, engine: Sender<Msg>) -> std::io::Result<()> {
    if !handshake(&mut s, export)? {
        s.shutdown();
        return Ok(());
    }
    let inflight = Arc::new(Inflight::default());
    let out = Arc::new(ConnOut {
        fd: s.raw_fd(),
        state: std::sync::Mutex::new(OutState::default()),
        cv: std::sync::Condvar::new(),
        inflight: Arc::clone(&inflight),
    });
    let rtx: crate::engine::ReplyTo = out.clone();
    let ws = s.try_clone()?;
    let wout = Arc::clone(&out);
    let writer = std::thread::spawn(move || {
        wout.writer();
        if wout.state.lock().map(|g| g.closed).unwrap_or(true) {
            // A broken socket: unblock the reader (waiting for room, or reading).
            ws.shutdown();
        }
    });
    let ss = u64::from(export.sector_size);
    let mut r = BufReader::with_capacity(256 * 1024, s.try_clone()?);
    let result = (|| -> std::io::Result<()> {
        loop {
            let mut h = [0u8; 28];
            r.read_exact(&mut h)?;
            let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            if magic != REQUEST_MAGIC {
                return Err(std::io::Error::other("bad request magic"));
            }
            let flags = u16::from_be_bytes([h[4], h[5]]);
            let typ = u16::from_be_bytes([h[6], h[7]]);
            let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap_or([0; 8]));
            let offset = u64::from_be_bytes(h[16..24].try_into().unwrap_or([0; 8]));
            let length = u32::from_be_bytes(h[24..28].try_into().unwrap_or([0; 4]));
            let fua = flags & CMD_FLAG_FUA != 0;
            let cost = if matches!(typ, CMD_READ | CMD_WRITE) {
                u64::from(length.min(MAX_REQUEST))
            } else {
                0
            };
            if typ != CMD_DISC {
                inflight.acquire(cookie, cost);
            }
            let mut data = None;
            if typ == CMD_WRITE {
                if length > MAX_REQUEST {
                    // Cannot stay in step with the stream: give up on the connection.
                    return Err(std::io::Error::other("write too large"));
                }
                let mut d = vec![0u8; length as usize];
                r.read_exact(&mut d)?;
                data = Some(Arc::new(d));
            }
            let op = match typ {
                CMD_READ => ParentOp::Read,
                CMD_WRITE => ParentOp::Write,
                CMD_FLUSH => ParentOp::Flush,
                CMD_TRIM => ParentOp::Discard,
                CMD_DISC => return Ok(()),
                _ => {
                    rtx.send(Reply {
                        cookie,
                        result: Err(IoError::Invalid),
                        data: None,
                    });
                    continue;
                }
            };
            let (sector, count) = if op == ParentOp::Flush {
                (0, 0)
            } else {
                let aligned = offset % ss == 0 && u64::from(length) % ss == 0;
                let inside = offset
                    .checked_add(u64::from(length))
                    .is_some_and(|e| e <= export.size);
                if !aligned || !inside || length == 0 || length > MAX_REQUEST {
                    rtx.send(Reply {
                        cookie,
                        result: Err(IoError::Invalid),
                        data: None,
                    });
                    continue;
                }
                (offset / ss, (u64::from(length) / ss) as u32)
            };
            let req = ParentReq {
                op,
                sector,
                count,
                fua,
                data,
                reply: Arc::clone(&rtx),
                cookie,
            };
            if engine.send(Msg::Parent(req)).is_err() {
                return Err(std::io::Error::other("server stopping"));
            }
        }
    })();
    // Every reply in flight is written before the socket closes.
    inflight.wait_idle();
    out.finish();
    let _ = writer.join();
    s.shutdown();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_payload() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        d.extend_from_slice(&3u16.to_be_bytes());
        let (n, r) = parse_info(&d).unwrap();
        assert_eq!(n, b"abc");
        assert_eq!(r, vec![0, 3]);
        assert!(parse_info(&d[..d.len() - 1]).is_none());
        assert!(parse_info(&[0, 0, 0, 9]).is_none());
    }
}
