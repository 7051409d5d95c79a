//! Offline binlog files: check the `\xfebin` magic, then frame one event at a time from its own
//! header, so that a truncated or corrupt file ends in a typed error instead of a panic.

use std::io::Read;

use super::DecodeError;
use super::event::{EventHeader, HEADER_LEN};

/// The 4 bytes every binlog file starts with.
pub const BINLOG_MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];

/// Largest event accepted from a file (MySQL's `max_allowed_packet` limit is 1 GiB).
const MAX_EVENT: u32 = 1 << 30;

/// Frames the events of a whole binlog held in memory. Yields `(file offset, event bytes)`.
#[derive(Debug, Clone)]
pub struct BinlogFile<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> BinlogFile<'a> {
    /// Checks the magic; the first event is at offset 4.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < 4 || buf[..4] != BINLOG_MAGIC {
            return Err(DecodeError::BadMagic { found: buf[..buf.len().min(4)].to_vec() });
        }
        Ok(BinlogFile { buf, pos: 4, done: false })
    }

    /// Offset of the next event.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BinlogFile<'a> {
    type Item = Result<(u64, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let at = self.pos as u64;
        let r = frame(rest, at).map(|n| (at, &rest[..n]));
        match &r {
            Ok((_, ev)) => self.pos += ev.len(),
            Err(_) => self.done = true,
        }
        Some(r)
    }
}

fn frame(rest: &[u8], at: u64) -> Result<usize, DecodeError> {
    if rest.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            what: "event header",
            offset: 0,
            need: HEADER_LEN,
            have: rest.len(),
        });
    }
    let h = EventHeader::parse(rest)?;
    check_size(h.event_size, at)?;
    let size = h.event_size as usize;
    if size > rest.len() {
        return Err(DecodeError::BadEventSize {
            file_offset: at,
            declared: size as u64,
            available: rest.len() as u64,
        });
    }
    Ok(size)
}

fn check_size(size: u32, at: u64) -> Result<(), DecodeError> {
    if (size as usize) < HEADER_LEN || size > MAX_EVENT {
        return Err(DecodeError::BadEventSize {
            file_offset: at,
            declared: u64::from(size),
            available: 0,
        });
    }
    Ok(())
}

/// Frames the events of a binlog read from any [`Read`] (a file being tailed, a pipe), one reused
/// buffer per event.
#[derive(Debug)]
pub struct BinlogReader<R> {
    inner: R,
    pos: u64,
    buf: Vec<u8>,
}

impl<R: Read> BinlogReader<R> {
    /// Reads and checks the magic.
    pub fn new(mut inner: R) -> Result<Self, DecodeError> {
        let mut magic = [0u8; 4];
        let n = read_full(&mut inner, &mut magic)?;
        if n < 4 || magic != BINLOG_MAGIC {
            return Err(DecodeError::BadMagic { found: magic[..n].to_vec() });
        }
        Ok(BinlogReader { inner, pos: 4, buf: Vec::new() })
    }

    /// Offset of the next event.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next event as `(file offset, bytes)`, `Ok(None)` at a clean end of file. A file that ends
    /// inside an event gives [`DecodeError::Truncated`] and the position stays at that event, so a
    /// tailer can retry once more bytes were written.
    pub fn next_event(&mut self) -> Result<Option<(u64, &[u8])>, DecodeError> {
        let mut head = [0u8; HEADER_LEN];
        let n = read_full(&mut self.inner, &mut head)?;
        if n == 0 {
            return Ok(None);
        }
        if n < HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "event header",
                offset: 0,
                need: HEADER_LEN,
                have: n,
            });
        }
        let h = EventHeader::parse(&head)?;
        check_size(h.event_size, self.pos)?;
        let size = h.event_size as usize;
        self.buf.clear();
        self.buf.extend_from_slice(&head);
        // Grow with the data actually read rather than trusting the declared size up front: a corrupt
        // header must not make us allocate a gigabyte.
        let got = (&mut self.inner)
            .take((size - HEADER_LEN) as u64)
            .read_to_end(&mut self.buf)
            .map_err(|e| DecodeError::Io(e.to_string()))?;
        if got < size - HEADER_LEN {
            return Err(DecodeError::Truncated {
                what: "event body",
                offset: HEADER_LEN,
                need: size - HEADER_LEN,
                have: got,
            });
        }
        let at = self.pos;
        self.pos += size as u64;
        Ok(Some((at, &self.buf)))
    }

    /// The bytes of the event the last successful [`Self::next_event`] returned.
    pub fn last_event(&self) -> &[u8] {
        &self.buf
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, DecodeError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DecodeError::Io(e.to_string())),
        }
    }
    Ok(n)
}
