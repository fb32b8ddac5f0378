//! Socket and syscall glue: the only module of `edge` allowed to use `unsafe`.
//!
//! It owns thin, non-blocking wrappers over `sendfile(2)`, `send(2)` with `MSG_MORE`,
//! `recvmsg(2)` on a kTLS socket (record types arrive as control messages), the kTLS
//! `close_notify` alert, the `TCP_ULP`/`SOL_TLS` socket options of the probe and the
//! hand-over, and `openat2(2)` + `fcntl(2)` for opening request paths beneath the
//! content root without blocking, glibc's `mallinfo2(3)` for the heap gauges and
//! `prctl(2)` for opting out of transparent huge pages.
//! Every function here is a single syscall (or, for `mallinfo2`, a single libc call)
//! with its result mapped to `io::Result` or `Option`; readiness, retries and timeouts
//! are the caller's business (the sockets are non-blocking and registered with tokio).
//! Every `unsafe` block carries a `SAFETY:` comment.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// TLS record content type of application data.
pub const RECORD_APPLICATION_DATA: u8 = 23;
/// TLS record content type of an alert.
pub const RECORD_ALERT: u8 = 21;

fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Opts the whole process out of transparent huge pages (`prctl(PR_SET_THP_DISABLE)`,
/// Linux 3.15 and later): its anonymous memory is then backed by 4 KiB pages whatever
/// `/sys/kernel/mm/transparent_hugepage/enabled` says, so a heap of many small
/// long-lived allocations is resident page by page, not 2 MiB at a time. Threads
/// share the setting; children inherit it.
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only; no memory of ours is
    // read or written.
    let ret = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
    cvt(ret as isize).map(|_| ())
}

/// Sends up to `count` bytes of `file_fd` starting at `*offset` to socket `sock_fd`,
/// advancing `*offset` by what was sent. Returns the bytes sent; `WouldBlock` when the
/// socket buffer is full. On a kTLS socket the kernel encrypts the bytes.
pub fn sendfile(
    sock_fd: RawFd,
    file_fd: RawFd,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut off =
        i64::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `off` is a valid, exclusively borrowed i64 for the duration of the call;
    // the kernel only reads the two descriptors, which the caller keeps open.
    let ret = unsafe { libc::sendfile64(sock_fd, file_fd, &mut off, count) };
    let n = cvt(ret)?;
    *offset = off as u64;
    Ok(n)
}

/// `send(2)` with `MSG_NOSIGNAL`, plus `MSG_MORE` when `more` is set (more data
/// follows: the kernel holds the bytes back to coalesce them with the body).
pub fn send(sock_fd: RawFd, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes for the call.
    let ret = unsafe { libc::send(sock_fd, buf.as_ptr().cast(), buf.len(), flags) };
    cvt(ret)
}

/// What one `recvmsg` on a kTLS socket returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KtlsRecv {
    /// Decrypted application data of this many bytes (0 = orderly TCP end).
    Data(usize),
    /// A record of another content type (alert, handshake, change_cipher_spec):
    /// its type and the first bytes of its payload (for an alert: level, description).
    Control {
        /// TLS content type.
        record_type: u8,
        /// Payload bytes copied into the caller's buffer.
        len: usize,
    },
}

/// Whether a non-blocking read of `sock_fd` would find something, without consuming
/// it: one `recv(2)` of a byte with `MSG_PEEK | MSG_DONTWAIT`. `Ok(0)` is the peer's
/// end; `WouldBlock` means nothing yet. On a kTLS socket whose next record is not
/// application data the kernel answers `EIO` (there is no room for its type): that is
/// something to read too, and the caller's read reports it.
pub fn peek(sock_fd: RawFd) -> io::Result<usize> {
    let mut byte = 0u8;
    // SAFETY: `byte` is a live one-byte buffer the kernel may write into; with MSG_PEEK
    // nothing is taken off the socket.
    let ret = unsafe {
        libc::recv(
            sock_fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    cvt(ret)
}

/// One `recvmsg(2)` on a socket with kTLS receive enabled. Non-application records
/// are reported as [`KtlsRecv::Control`] instead of failing with `EIO`.
pub fn ktls_recv(sock_fd: RawFd, buf: &mut [u8]) -> io::Result<KtlsRecv> {
    // Room for one cmsghdr carrying a single byte (the record type), u64-aligned.
    let mut cmsg_space = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg_space);
    // SAFETY: `msg` points at `iov` (the caller's writable buffer) and at
    // `cmsg_space`, both alive and exclusively borrowed for the duration of the call.
    let n = cvt(unsafe { libc::recvmsg(sock_fd, &mut msg, 0) })?;
    // SAFETY: `msg` was filled by the kernel; CMSG_FIRSTHDR only reads msg_control/len.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if !cmsg.is_null() {
        // SAFETY: the kernel returned a complete cmsghdr inside `cmsg_space`.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_level == libc::SOL_TLS && hdr.cmsg_type == libc::TLS_GET_RECORD_TYPE {
            // SAFETY: TLS_GET_RECORD_TYPE carries exactly one byte of data.
            let record_type = unsafe { *libc::CMSG_DATA(cmsg) };
            if record_type != RECORD_APPLICATION_DATA {
                return Ok(KtlsRecv::Control {
                    record_type,
                    len: n,
                });
            }
        }
    }
    Ok(KtlsRecv::Data(n))
}

/// Sends a TLS alert record (`level`, `description`) on a kTLS socket; with
/// `(1, 0)` that is `close_notify`.
pub fn ktls_send_alert(sock_fd: RawFd, level: u8, description: u8) -> io::Result<()> {
    let payload = [level, description];
    let mut cmsg_space = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as usize;
    // SAFETY: msg_control points at `cmsg_space`, which is larger than CMSG_SPACE(1)
    // and u64-aligned, so the first header and its one data byte fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as usize;
        *libc::CMSG_DATA(cmsg) = RECORD_ALERT;
    }
    // SAFETY: `msg` points at live buffers for the duration of the call; the kernel
    // only reads them.
    cvt(unsafe { libc::sendmsg(sock_fd, &msg, libc::MSG_NOSIGNAL) }).map(|_| ())
}

/// Makes the next `close` of a TCP socket abortive (`SO_LINGER` on with a zero
/// timeout): queued data is discarded and the peer gets an RST. Used on a client cut
/// off for reading too slowly, whose send buffer would otherwise still drain to it
/// (and stay pinned) after we gave up (nginx's `reset_timedout_connection`).
pub fn reset_on_close(sock_fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(sock_fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// `setsockopt(2)` with the bytes of `value` as the option value. `T` is the kernel's
/// type for the option: an int, `linger`, a byte string, a crypto-info struct.
fn set_option<T>(
    sock_fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live reference to size_of::<T>() bytes; the kernel only
    // reads that many, during the call.
    let ret = unsafe {
        libc::setsockopt(
            sock_fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(ret as isize).map(|_| ())
}

/// Sets `TCP_NOTSENT_LOWAT` on a TCP socket: it takes new data, and polls writable,
/// only while fewer than `bytes` (half that, for the wake-up) of what it holds are
/// not yet sent. On a listener, accepted connections inherit it.
pub fn set_notsent_lowat(sock_fd: RawFd, bytes: u32) -> io::Result<()> {
    let v =
        libc::c_int::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    set_option(sock_fd, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, &v)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (each connection is a
/// descriptor; systemd and shells often start processes with a soft limit of 1024)
/// and returns the resulting `(soft, hard)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel writes into.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } as isize)?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a live rlimit the kernel only reads.
        if cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } as isize).is_ok() {
            lim = raised;
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The C allocator's totals, from glibc's `mallinfo2(3)`: `(in_use, free)`, the bytes
/// handed out (in the arenas and in chunks mapped on their own) and the bytes its
/// arenas hold free (fragmentation and the top of each heap). `None` on a libc that
/// has no `mallinfo2`. It walks every arena's free lists under their locks: for a
/// scrape, not for a request path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_totals() -> Option<(u64, u64)> {
    // SAFETY: mallinfo2 takes no arguments and returns a struct by value; glibc locks
    // each arena while it reads it, so it is safe to call from any thread.
    let info = unsafe { libc::mallinfo2() };
    Some(((info.uordblks + info.hblkhd) as u64, info.fordblks as u64))
}

/// See the glibc version: other libcs report nothing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_totals() -> Option<(u64, u64)> {
    None
}

/// Sets `TCP_ULP "tls"` on a connected TCP socket. Fails with `ENOENT` when the
/// kernel has no `tls` module loaded (or built in).
pub fn set_tcp_ulp_tls(sock_fd: RawFd) -> io::Result<()> {
    set_option(sock_fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")
}

/// Direction of a kTLS key installation.
#[derive(Debug, Clone, Copy)]
pub enum KtlsDirection {
    /// Transmit (`TLS_TX`).
    Tx,
    /// Receive (`TLS_RX`).
    Rx,
}

/// Installs a crypto-info struct (one of libc's `tls12_crypto_info_*`, passed as
/// bytes of a `#[repr(C)]` value) for `dir` on a socket that has `TCP_ULP "tls"`.
pub fn set_ktls_crypto<T: KtlsCryptoInfo>(
    sock_fd: RawFd,
    dir: KtlsDirection,
    info: &T,
) -> io::Result<()> {
    let opt = match dir {
        KtlsDirection::Tx => libc::TLS_TX,
        KtlsDirection::Rx => libc::TLS_RX,
    };
    // `info` is a `#[repr(C)]` kernel uAPI struct (sealed trait): its bytes are the
    // option value.
    set_option(sock_fd, libc::SOL_TLS, opt, info)
}

/// How [`open_beneath`] resolves a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Stay beneath the directory and follow no symlink at all (`RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`).
    BeneathNoSymlinks,
    /// Follow symlinks wherever they lead, but no `/proc` magic links
    /// (`RESOLVE_NO_MAGICLINKS`); the caller checks where the result lies if it cares.
    FollowSymlinks,
}

/// Opens `path` (relative, NUL-terminated) under the directory `dir_fd` read-only,
/// with `O_NONBLOCK` (so a FIFO or device cannot block the caller), `O_NOCTTY` and
/// `O_CLOEXEC`, resolving it as `resolve` says (`openat2(2)`, Linux 5.6+). A path
/// that would leave `dir_fd` fails with `EXDEV`, a refused symlink with `ELOOP`.
pub fn open_beneath(dir_fd: BorrowedFd<'_>, path: &CStr, resolve: Resolve) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero open_how is valid (no flags, no mode, no resolve flags);
    // the struct is non_exhaustive in libc, so it cannot be built with a literal.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    how.resolve = match resolve {
        Resolve::BeneathNoSymlinks => {
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS
        }
        Resolve::FollowSymlinks => libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `how` a live open_how of the
    // size passed; the kernel only reads both. `dir_fd` is a live descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir_fd.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = cvt(ret as isize)? as RawFd;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears `O_NONBLOCK` on `fd` (a regular file opened by [`open_beneath`], so that
/// `sendfile` and `pread` on it behave as on any file).
pub fn clear_nonblock(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor read and set its status flags only.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } as isize)? as i32;
    if flags & libc::O_NONBLOCK != 0 {
        let cleared = flags & !libc::O_NONBLOCK;
        // SAFETY: as above.
        let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, cleared) };
        cvt(ret as isize)?;
    }
    Ok(())
}

/// The path `fd` refers to, read from `/proc/self/fd/N` into `out` (no allocation);
/// returns the length written. Used to check that a followed symlink stayed inside
/// the content root.
pub fn fd_path(fd: BorrowedFd<'_>, out: &mut [u8]) -> io::Result<usize> {
    let mut link = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut link[..]);
    std::io::Write::write_fmt(
        &mut cursor,
        format_args!("/proc/self/fd/{}\0", fd.as_raw_fd()),
    )?;
    // SAFETY: `link` holds a NUL-terminated path written just above; `out` is a
    // writable buffer of `out.len()` bytes; readlink writes at most that many.
    let n =
        cvt(unsafe { libc::readlink(link.as_ptr().cast(), out.as_mut_ptr().cast(), out.len()) })?;
    if n == out.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(n)
}

mod sealed {
    pub trait Sealed {}
}

/// The kernel's `tls12_crypto_info_*` structs (sealed: only these may be passed to
/// [`set_ktls_crypto`]).
pub trait KtlsCryptoInfo: sealed::Sealed {}
macro_rules! crypto_info {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl KtlsCryptoInfo for $t {}
    )*};
}
crypto_info!(
    libc::tls12_crypto_info_aes_gcm_128,
    libc::tls12_crypto_info_aes_gcm_256,
    libc::tls12_crypto_info_chacha20_poly1305
);

/// Pages checked per `mincore(2)` call in [`resident`]: 16 MiB of 4 KiB pages.
const RESIDENCY_WINDOW_PAGES: usize = 4096;

/// Whether every page of `len` bytes of `fd` from `offset` is in the page cache, so
/// that `sendfile` or `pread` of them will not wait for the disk. Maps the range
/// (`mmap`, no access, nothing is faulted in), asks `mincore(2)`, unmaps; per 16 MiB
/// window: three syscalls and no allocation.
pub fn resident(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let mut start = offset / page * page;
    let end = offset.saturating_add(len);
    let mut vec = [0u8; RESIDENCY_WINDOW_PAGES];
    while start < end {
        let window = (end - start).min(RESIDENCY_WINDOW_PAGES as u64 * page);
        let off = libc::off_t::try_from(start)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh shared read-only mapping chosen by the kernel (addr NULL);
        // nothing else refers to it, and it is unmapped below on every path.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                window as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `addr` is the page-aligned start of our `window`-byte mapping and
        // `vec` has room for one byte per page of it (window <= WINDOW_PAGES pages).
        let ret = unsafe { libc::mincore(addr, window as usize, vec.as_mut_ptr()) };
        let err = io::Error::last_os_error();
        // SAFETY: unmaps exactly the mapping made above; nothing borrowed it.
        unsafe { libc::munmap(addr, window as usize) };
        if ret != 0 {
            return Err(err);
        }
        let pages = window.div_ceil(page) as usize;
        if vec[..pages].iter().any(|v| v & 1 == 0) {
            return Ok(false);
        }
        start += window;
    }
    Ok(true)
}

/// Ignores SIGHUP until the reload handler is installed (tokio's signal handling
/// replaces this disposition when `serve` starts listening for it). SIGHUP's default
/// action terminates the process, so without this a `systemctl reload` that lands
/// while edge is still starting would kill it instead of being a no-op.
pub fn ignore_sighup_until_handled() -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code; changing a signal's disposition
    // touches no memory of ours.
    let prev = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn notsent_lowat_of(fd: RawFd) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live and sized for the option; the kernel writes
        // at most `len` bytes into `v`.
        let ret = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(ret, 0, "{}", io::Error::last_os_error());
        v
    }

    #[test]
    fn accepted_connections_inherit_the_listeners_notsent_lowat() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let unset = TcpListener::bind("127.0.0.1:0").unwrap();
        set_notsent_lowat(listener.as_raw_fd(), 131_072).unwrap();
        let _c1 = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _c2 = TcpStream::connect(unset.local_addr().unwrap()).unwrap();
        let (s1, _) = listener.accept().unwrap();
        let (s2, _) = unset.accept().unwrap();
        assert_eq!(notsent_lowat_of(s1.as_raw_fd()), 131_072);
        // Unset, the socket's own value reads 0 (the kernel then uses the sysctl's).
        assert_eq!(notsent_lowat_of(s2.as_raw_fd()), 0);
    }

    #[test]
    fn sendfile_sends_the_requested_range() {
        let dir = std::env::temp_dir().join(format!("edge-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut off = 1000u64;
        let mut left = 50_000usize;
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 50_005];
            c.read_exact(&mut got).unwrap();
            got
        });
        assert_eq!(send(s.as_raw_fd(), b"head:", true).unwrap(), 5);
        while left > 0 {
            let n = sendfile(s.as_raw_fd(), file.as_raw_fd(), &mut off, left).unwrap();
            left -= n;
        }
        assert_eq!(off, 51_000);
        let got = reader.join().unwrap();
        assert_eq!(&got[..5], b"head:");
        assert_eq!(&got[5..], &data[1000..51_000]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: test-only; `lim` is a live rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        if lim.rlim_max > 256 {
            let low = libc::rlimit {
                rlim_cur: 256,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: test-only; lowers this test process's soft limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        }
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!((soft, hard), (lim.rlim_max, lim.rlim_max));
    }

    #[test]
    fn ktls_recv_on_plain_socket_reports_data() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            ktls_recv(s.as_raw_fd(), &mut buf).unwrap(),
            KtlsRecv::Data(5)
        );
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn residency_follows_the_page_cache() {
        use std::io::Write as _;
        use std::os::fd::AsFd as _;
        let path = std::env::temp_dir().join(format!("edge-resident-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        assert!(resident(f.as_fd(), 0, 1 << 20).unwrap(), "just written");
        assert!(resident(f.as_fd(), 4000, 0).unwrap(), "an empty range");
        // SAFETY: advice on our own open descriptor; no memory is involved.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let cold = !resident(f.as_fd(), 0, 1 << 20).unwrap();
        let r = std::fs::read(&path).unwrap();
        assert_eq!(r.len(), 1 << 20);
        assert!(resident(f.as_fd(), 0, 1 << 20).unwrap(), "read back in");
        let _ = std::fs::remove_file(&path);
        // Dropping clean pages is advisory; it works on the filesystems we test on.
        assert!(cold, "DONTNEED left the pages resident");
    }
}
