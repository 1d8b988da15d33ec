//! The replication connection's transport: libpq (through `pq-sys`) in
//! non-blocking mode, driven by tokio. pg_walstream decodes what it carries
//! ([`pg_walstream::PgOutputDecoder`]); the reading is ours.
//!
//! # Why not pg_walstream's own stream
//! Its libpq stream (0.10) clears the socket's readiness whenever libpq has
//! no complete message after a read. But libpq reads at most its buffer's
//! free space per call, and grows the buffer only once it has seen the
//! header of a message larger than that: the rest of a large message (a
//! row with a 100 kB TOASTed value) then sits in the kernel's buffer, no new
//! readiness edge comes for bytes already queued, and once the server has
//! filled the TCP window it cannot send the bytes that would make one. The
//! stream stopped for good, with the slot holding WAL (found by
//! `tests/postgres_cdc.rs`, the TOAST tests, on a loaded machine; the
//! socket showed 68 kB unread). Its rustls backend reads correctly, but
//! needs a `webpki-roots` release the registry this project builds from
//! does not have.
//!
//! # How this one reads (the rule that prevents the stall)
//! - readiness is cleared only when a one-byte `MSG_PEEK` on the socket
//!   would block, never because libpq's buffer holds a partial message;
//! - with TLS, OpenSSL can hold decrypted bytes that the socket no longer
//!   shows; so while a message is incomplete the wait for readiness is also
//!   bounded (1 ms, doubling to 1 s), after which libpq reads again anyway.
//!
//! Every message is whole when [`Wire::next`] returns it, and `next` holds
//! no partial state across an `.await`: dropping its future (a `select!`)
//! loses nothing.

use bytes::Bytes;
use pq_sys as pq;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;
use syncline_core::{Error, Result};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One message of the replication stream.
pub enum Frame {
    /// WAL data: a pgoutput message that starts at `start`; the server has
    /// sent WAL up to `end`.
    XLogData { start: u64, end: u64, body: Bytes },
    /// The server's keepalive: its WAL end, and whether it wants a status
    /// update now.
    Keepalive { end: u64, reply: bool },
}

/// libpq's connection (closed on drop).
struct Conn(*mut pq::PGconn);

// SAFETY: a PGconn may move between threads; it is used by one at a time
// (`&mut Wire`).
unsafe impl Send for Conn {}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the pointer came from PQconnectdb and is finished once.
        unsafe { pq::PQfinish(self.0) }
    }
}

impl Conn {
    /// Move what the socket (or TLS) holds into libpq's buffer.
    fn consume(&self) -> Result<()> {
        // SAFETY: a live connection.
        if unsafe { pq::PQconsumeInput(self.0) } == 0 {
            return Err(Error::transient(format!(
                "the replication connection failed: {}",
                self.error()
            )));
        }
        Ok(())
    }

    fn error(&self) -> String {
        // SAFETY: PQerrorMessage returns a NUL-terminated string owned by the connection.
        let msg = unsafe { CStr::from_ptr(pq::PQerrorMessage(self.0)) };
        msg.to_string_lossy().trim().to_string()
    }
}

/// libpq's socket, as tokio watches it (libpq owns and closes it).
struct Socket(RawFd);

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: open for as long as the `Wire` (see `Wire::start`).
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}

/// A replication connection in COPY BOTH mode.
pub struct Wire {
    // Declared before `conn`: deregistered before libpq closes the socket.
    fd: AsyncFd<Socket>,
    conn: Conn,
}

/// The longest wait for readiness while a message may be incomplete.
const REREAD_MAX: Duration = Duration::from_secs(1);

impl Wire {
    /// Connect with `conninfo` (libpq's words, `replication=database`
    /// included) and run `start` (a `START_REPLICATION` command).
    pub async fn start(conninfo: String, start: String) -> Result<Wire> {
        let conn = tokio::task::spawn_blocking(move || -> Result<Conn> {
            let info = CString::new(conninfo)
                .map_err(|_| Error::config("the connection settings contain a NUL byte"))?;
            // SAFETY: a valid C string; the result is checked below.
            let conn = Conn(unsafe { pq::PQconnectdb(info.as_ptr()) });
            if conn.0.is_null() {
                return Err(Error::transient("libpq could not allocate a connection"));
            }
            // SAFETY: a live connection.
            if unsafe { pq::PQstatus(conn.0) } != pq::ConnStatusType::CONNECTION_OK {
                return Err(Error::transient(format!(
                    "cannot open the replication connection: {}",
                    conn.error()
                )));
            }
            let command = CString::new(start).expect("no NUL in the command");
            // SAFETY: a live connection and a valid C string; the result is cleared.
            let status = unsafe {
                let res = pq::PQexec(conn.0, command.as_ptr());
                let status = pq::PQresultStatus(res);
                pq::PQclear(res);
                status
            };
            if status != pq::ExecStatusType::PGRES_COPY_BOTH {
                return Err(Error::transient(format!(
                    "the server refused to start replication: {}",
                    conn.error()
                )));
            }
            // SAFETY: a live connection.
            if unsafe { pq::PQsetnonblocking(conn.0, 1) } != 0 {
                return Err(Error::transient(format!(
                    "cannot make the replication connection non-blocking: {}",
                    conn.error()
                )));
            }
            Ok(conn)
        })
        .await
        .map_err(|e| Error::internal(format!("the connecting task failed: {e}")))??;
        // SAFETY: a live connection.
        let fd = unsafe { pq::PQsocket(conn.0) };
        // SAFETY: libpq's socket stays open until `conn` is finished, and
        // `fd` is dropped first (field order); nothing else closes it.
        let fd = unsafe {
            AsyncFd::register_with_interest(Socket(fd), Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| {
            Error::transient(format!(
                "cannot watch the replication socket: {}",
                std::io::Error::from(e)
            ))
        })?;
        Ok(Wire { fd, conn })
    }

    /// The next message (keepalives included).
    pub async fn next(&mut self) -> Result<Frame> {
        let mut reread = Duration::from_millis(1);
        loop {
            if let Some(frame) = self.take()? {
                return Ok(frame);
            }
            // Incomplete: wait until the socket has bytes, or a while.
            match tokio::time::timeout(reread, self.fd.readable()).await {
                Ok(guard) => {
                    let mut guard = guard.map_err(|e| {
                        Error::transient(format!("cannot wait for the replication socket: {e}"))
                    })?;
                    self.conn.consume()?;
                    clear_if_empty(&mut guard);
                    reread = Duration::from_millis(1);
                }
                Err(_) => {
                    self.conn.consume()?;
                    reread = (reread * 2).min(REREAD_MAX);
                }
            }
        }
    }

    /// A whole message from libpq's buffer, if it holds one.
    fn take(&mut self) -> Result<Option<Frame>> {
        let mut buf: *mut std::os::raw::c_char = std::ptr::null_mut();
        // SAFETY: a live connection; libpq allocates `buf`, freed below.
        let n = unsafe { pq::PQgetCopyData(self.conn.0, &mut buf, 1) };
        match n {
            0 => Ok(None),
            -1 => Err(Error::transient(format!(
                "the server ended the replication stream{}",
                match self.conn.error() {
                    e if e.is_empty() => String::new(),
                    e => format!(": {e}"),
                }
            ))),
            n if n < 0 => Err(Error::transient(format!(
                "the replication connection failed: {}",
                self.conn.error()
            ))),
            n => {
                // SAFETY: libpq returned `n` bytes at `buf`; copied, then freed.
                let bytes = unsafe {
                    let bytes = Bytes::copy_from_slice(std::slice::from_raw_parts(
                        buf as *const u8,
                        n as usize,
                    ));
                    pq::PQfreemem(buf.cast());
                    bytes
                };
                parse(bytes).map(Some)
            }
        }
    }

    /// Tell the server what was received (`write`) and what it may forget
    /// (`flush`, also reported as applied).
    pub async fn status(&mut self, write: u64, flush: u64) -> Result<()> {
        let mut msg = Vec::with_capacity(34);
        msg.push(b'r');
        msg.extend_from_slice(&write.to_be_bytes());
        msg.extend_from_slice(&flush.to_be_bytes());
        msg.extend_from_slice(&flush.to_be_bytes());
        msg.extend_from_slice(&pg_now().to_be_bytes());
        msg.push(0); // no reply asked for
                     // SAFETY: a live connection; libpq copies the bytes.
        let queued =
            unsafe { pq::PQputCopyData(self.conn.0, msg.as_ptr().cast(), msg.len() as i32) };
        if queued != 1 {
            return Err(Error::transient(format!(
                "cannot send a status update: {}",
                self.conn.error()
            )));
        }
        loop {
            // SAFETY: a live connection.
            match unsafe { pq::PQflush(self.conn.0) } {
                0 => return Ok(()),
                // Not all sent: wait until the socket takes more, reading
                // meanwhile (the server may be waiting for us to read
                // before it reads what we send; libpq's rule).
                1 => tokio::select! {
                    w = self.fd.writable() => {
                        let mut guard = w.map_err(|e| {
                            Error::transient(format!("cannot wait for the replication socket: {e}"))
                        })?;
                        guard.clear_ready();
                    }
                    r = self.fd.readable() => {
                        let mut guard = r.map_err(|e| {
                            Error::transient(format!("cannot wait for the replication socket: {e}"))
                        })?;
                        self.conn.consume()?;
                        clear_if_empty(&mut guard);
                    }
                },
                _ => {
                    return Err(Error::transient(format!(
                        "cannot send a status update: {}",
                        self.conn.error()
                    )))
                }
            }
        }
    }
}

/// Clear the socket's read readiness only if a one-byte peek would block:
/// libpq may have left bytes in the kernel's buffer, and no new edge comes
/// for them.
fn clear_if_empty(guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, Socket>) {
    let _ = guard.try_io(|fd| {
        socket2::SockRef::from(fd.get_ref())
            .peek(&mut [std::mem::MaybeUninit::uninit()])
            .map(drop)
    });
}

/// Microseconds since 2000-01-01, the server's clock format.
fn pg_now() -> i64 {
    const PG_EPOCH_US: i64 = 946_684_800_000_000;
    chrono::Utc::now().timestamp_micros() - PG_EPOCH_US
}

/// A CopyData payload as a [`Frame`].
fn parse(bytes: Bytes) -> Result<Frame> {
    let bad = || {
        Error::internal(format!(
            "a malformed replication message ({} bytes)",
            bytes.len()
        ))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    match bytes.first() {
        Some(b'w') => {
            let (start, end) = (u64_at(1).ok_or_else(bad)?, u64_at(9).ok_or_else(bad)?);
            if bytes.len() < 25 {
                return Err(bad());
            }
            Ok(Frame::XLogData {
                start,
                end,
                body: bytes.slice(25..),
            })
        }
        Some(b'k') => {
            let end = u64_at(1).ok_or_else(bad)?;
            let reply = *bytes.get(17).ok_or_else(bad)? != 0;
            Ok(Frame::Keepalive { end, reply })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_short_ones_are_refused() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&7u64.to_be_bytes());
        w.extend_from_slice(&9u64.to_be_bytes());
        w.extend_from_slice(&0i64.to_be_bytes());
        w.extend_from_slice(b"Bbody");
        match parse(Bytes::from(w.clone())).unwrap() {
            Frame::XLogData { start, end, body } => {
                assert_eq!((start, end, &body[..]), (7, 9, &b"Bbody"[..]))
            }
            Frame::Keepalive { .. } => panic!("not a keepalive"),
        }
        let mut k = vec![b'k'];
        k.extend_from_slice(&42u64.to_be_bytes());
        k.extend_from_slice(&0i64.to_be_bytes());
        k.push(1);
        assert!(matches!(
            parse(Bytes::from(k)).unwrap(),
            Frame::Keepalive {
                end: 42,
                reply: true
            }
        ));
        assert!(parse(Bytes::from(w[..20].to_vec())).is_err());
        assert!(parse(Bytes::from_static(b"k")).is_err());
        assert!(parse(Bytes::from_static(b"?")).is_err());
    }
}
