//! Bytes in, objects out, with bounded memory: plain bytes → blake3 → zstd → age →
//! blake3 → fixed-size chunks → the uploader; and the same in reverse.
//!
//! Producers and consumers of data (pg_dump's stdout, tar, a child's stdin) are
//! blocking `Read`/`Write`, so each object is encoded or decoded on a blocking thread
//! that talks to the async uploader/downloader through a channel of at most
//! [`CHANNEL_CHUNKS`] chunks. Memory is a few chunks plus zstd's window and its
//! buffered jobs (2 MiB each, see `ObjectWriter::new`), whatever the size of the data.
//!
//! Encryption is age (X25519): a stored object is a standard `age` file whose plaintext
//! is a standard zstd stream, so `age -d -i key.txt OBJECT | zstd -d` recovers it
//! without steward. age is pre-1.0; the manifest names the scheme (`age-x25519`) so a
//! future format can sit beside it.

use std::io::{self, BufRead, BufReader, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Upload part size: S3 needs parts of at least 5 MiB (all but the last).
pub const CHUNK: usize = 8 << 20;
/// Chunks in flight between the encoder and the uploader.
pub const CHANNEL_CHUNKS: usize = 2;
/// Bytes of input per zstd worker job (see `ObjectWriter::new`).
const ZSTD_JOB: u32 = 2 << 20;

/// Size and blake3 of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub bytes: u64,
    pub blake3: String,
}

/// Counts and hashes what passes through.
struct Hashing<T> {
    inner: T,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing { inner, hasher: blake3::Hasher::new(), bytes: 0 }
    }

    fn into_parts(self) -> (T, Digest) {
        (self.inner, Digest { bytes: self.bytes, blake3: self.hasher.finalize().to_hex().to_string() })
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Cuts the stored stream into [`CHUNK`]s for the uploader; blocks while it is behind.
struct ChunkSender {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
}

impl ChunkSender {
    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped (see its error)"))
    }

    fn finish(mut self) -> io::Result<()> {
        let last = std::mem::take(&mut self.buf);
        if !last.is_empty() {
            self.send(last)?;
        }
        Ok(())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = buf.len().min(room);
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.send(full)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The optional encryption layer.
enum Sealed<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Plain(w) => Ok(w),
            Sealed::Age(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

/// Where a producer writes one object's plain bytes.
pub struct ObjectWriter {
    inner: Hashing<zstd::stream::write::Encoder<'static, Sealed<Hashing<ChunkSender>>>>,
}

/// zstd worker threads beside the producer: on a small machine the dump tool itself
/// needs a core, so compression gets one more thread, not all of them.
fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4) as u32)
}

impl ObjectWriter {
    pub fn new(level: i32, recipient: Option<&age::x25519::Recipient>, tx: mpsc::Sender<Bytes>) -> io::Result<ObjectWriter> {
        let stored = Hashing::new(ChunkSender { buf: Vec::with_capacity(CHUNK), tx });
        let sealed = match recipient {
            None => Sealed::Plain(stored),
            Some(r) => {
                let enc = age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient)).map_err(io::Error::other)?;
                Sealed::Age(enc.wrap_output(stored)?)
            }
        };
        let mut zstd = zstd::stream::write::Encoder::new(sealed, level)?;
        zstd.multithread(zstd_workers())?;
        // zstd sizes its jobs from the window (8 MiB at level 3) and keeps about
        // 2 × workers + 3 of them buffered: ~56 MiB on two workers, ~90 MiB on four.
        // 2 MiB jobs bound that whatever the core count; on the benchmark they cost
        // neither speed nor size and halved peak RSS (BENCHMARKS.md).
        zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
        Ok(ObjectWriter { inner: Hashing::new(zstd) })
    }

    /// Ends the object; returns the plain and stored digests.
    pub fn finish(self) -> io::Result<(Digest, Digest)> {
        let (zstd, plain) = self.inner.into_parts();
        let sealed = zstd.finish()?;
        let stored = sealed.finish()?;
        let (sender, stored) = stored.into_parts();
        sender.finish()?;
        Ok((plain, stored))
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the chunks the downloader receives.
pub struct ChunkReceiver {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChunkReceiver {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChunkReceiver {
        ChunkReceiver { rx, current: Bytes::new() }
    }
}

impl Read for ChunkReceiver {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// The optional decryption layer.
enum Opened<R: Read> {
    Plain(R),
    Age(age::stream::StreamReader<R>),
}

impl<R: Read> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Opened::Plain(r) => r.read(buf),
            Opened::Age(r) => r.read(buf),
        }
    }
}

/// Plain bytes of one stored object, hashed as they are read.
pub struct ObjectReader {
    inner: Hashing<zstd::stream::read::Decoder<'static, BufReader<Opened<BufReader<ChunkReceiver>>>>>,
}

/// Why an object could not be opened or read back.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the backup is encrypted and no key is configured for it")]
    NoKey,
    #[error("the encryption key does not open this backup (wrong key, or the object is damaged)")]
    WrongKey,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ObjectReader {
    pub fn new(source: ChunkReceiver, identity: Option<&age::x25519::Identity>, encrypted: bool) -> Result<ObjectReader, OpenError> {
        let input = BufReader::new(source);
        let opened = match (encrypted, identity) {
            (false, _) => Opened::Plain(input),
            (true, None) => return Err(OpenError::NoKey),
            (true, Some(id)) => {
                let dec =
                    age::Decryptor::new(input).map_err(|e| OpenError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
                let reader = dec.decrypt(std::iter::once(id as &dyn age::Identity)).map_err(|e| match e {
                    age::DecryptError::NoMatchingKeys => OpenError::WrongKey,
                    other => OpenError::Io(io::Error::new(io::ErrorKind::InvalidData, other.to_string())),
                })?;
                Opened::Age(reader)
            }
        };
        let zstd = zstd::stream::read::Decoder::new(opened)?;
        Ok(ObjectReader { inner: Hashing::new(zstd) })
    }

    /// Reads whatever the consumer left (so the digest covers the whole object) and
    /// returns the plain digest.
    pub fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self.inner, &mut io::sink())?;
        // Anything after the zstd stream would be unverified bytes: there must be none.
        let (zstd, digest) = self.inner.into_parts();
        let mut rest = zstd.finish();
        if !rest.fill_buf()?.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes after the end of the compressed stream"));
        }
        Ok(digest)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Parses an age identity from its text (`AGE-SECRET-KEY-1...`), with a message that
/// never repeats the text.
pub fn identity(text: &str) -> Result<age::x25519::Identity, String> {
    text.trim().parse::<age::x25519::Identity>().map_err(|_| {
        "the encryption key is not an age X25519 identity (AGE-SECRET-KEY-1...); make one with `steward backup keygen`".to_string()
    })
}

/// A stored-bytes digest computed on the async side, as chunks arrive.
pub struct StoredHasher {
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Default for StoredHasher {
    fn default() -> Self {
        StoredHasher { hasher: blake3::Hasher::new(), bytes: 0 }
    }
}

impl StoredHasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub fn finish(self) -> Digest {
        Digest { bytes: self.bytes, blake3: self.hasher.finalize().to_hex().to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `data` on a thread and collects the chunks.
    fn encode(data: &[u8], key: Option<&age::x25519::Identity>) -> (Vec<Bytes>, Digest, Digest) {
        let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
        let recipient = key.map(|k| k.to_public());
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            let mut w = ObjectWriter::new(3, recipient.as_ref(), tx).unwrap();
            for piece in data.chunks(100_003) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap()
        });
        let mut chunks = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            chunks.push(c);
        }
        let (plain, stored) = writer.join().unwrap();
        (chunks, plain, stored)
    }

    fn decode(chunks: Vec<Bytes>, key: Option<&age::x25519::Identity>, encrypted: bool) -> Result<(Vec<u8>, Digest), String> {
        let (tx, rx) = mpsc::channel(chunks.len() + 1);
        for c in chunks {
            tx.try_send(Ok(c)).unwrap();
        }
        drop(tx);
        let mut r = ObjectReader::new(ChunkReceiver::new(rx), key, encrypted).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        let d = r.finish().map_err(|e| e.to_string())?;
        Ok((out, d))
    }

    fn sample() -> Vec<u8> {
        (0..3_000_000u32).flat_map(|i| format!("row {i} value {}\n", i % 97).into_bytes()).collect()
    }

    #[test]
    fn round_trip_with_and_without_encryption() {
        let data = sample();
        for key in [None, Some(age::x25519::Identity::generate())] {
            let (chunks, plain, stored) = encode(&data, key.as_ref());
            assert_eq!(plain.bytes, data.len() as u64);
            assert!(stored.bytes < plain.bytes / 3, "compressed {} of {}", stored.bytes, plain.bytes);
            assert!(chunks.iter().rev().skip(1).all(|c| c.len() == CHUNK), "every chunk but the last is full");
            assert_eq!(chunks.iter().map(|c| c.len() as u64).sum::<u64>(), stored.bytes);
            let (out, d) = decode(chunks, key.as_ref(), key.is_some()).unwrap();
            assert_eq!(out, data);
            assert_eq!(d, plain);
        }
    }

    #[test]
    fn a_wrong_key_or_a_changed_byte_is_refused() {
        let data = sample();
        let key = age::x25519::Identity::generate();
        let (chunks, _, _) = encode(&data, Some(&key));
        let wrong = age::x25519::Identity::generate();
        assert!(decode(chunks.clone(), Some(&wrong), true).unwrap_err().contains("does not open"));
        assert!(decode(chunks.clone(), None, true).unwrap_err().contains("no key"));
        let mut damaged: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let at = damaged.len() / 2;
        damaged[at] ^= 1;
        assert!(decode(vec![Bytes::from(damaged)], Some(&key), true).is_err(), "age authenticates every chunk");

        let (plain_chunks, plain, _) = encode(&data, None);
        let mut damaged: Vec<u8> = plain_chunks.iter().flat_map(|c| c.to_vec()).collect();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x40;
        // zstd refuses the stream, or the plain digest differs.
        match decode(vec![Bytes::from(damaged)], None, false) {
            Err(_) => {}
            Ok((_, d)) => assert_ne!(d, plain),
        }
    }
}
