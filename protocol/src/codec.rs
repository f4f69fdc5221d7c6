//! Primitive encodings shared by every message: little-endian integers,
//! `str` (u16 length + UTF-8), `bytes` (u32 length + bytes), arrays (u32 count
//! + items) and options (u8 flag 0/1 + value).
//!
//! Decoding goes through a [`Reader`] over a `Bytes` buffer, which turns every
//! underflow into an error and hands out `bytes` fields as zero-copy slices.
//! Encoding writes straight into a `BytesMut`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::FrameError;
use crate::limits::MAX_ARRAY_LEN;

/// A value with a wire encoding: message bodies and the items of their arrays.
pub trait Wire: Sized {
    /// Fewest bytes one encoded value takes. Bounds the count of an array of
    /// these before anything is allocated for it.
    const MIN_LEN: usize;

    fn encode(&self, buf: &mut BytesMut);

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError>;
}

/// A cursor over one frame's body. Every read checks the bytes that remain.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.remaining() < n {
            return Err(FrameError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub fn i8(&mut self) -> Result<i8, FrameError> {
        Ok(self.u8()? as i8)
    }

    pub fn u16(&mut self) -> Result<u16, FrameError> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn i16(&mut self) -> Result<i16, FrameError> {
        self.array().map(i16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, FrameError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, FrameError> {
        self.array().map(u64::from_le_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, FrameError> {
        self.array().map(i64::from_le_bytes)
    }

    /// A `str` borrowed from the buffer.
    pub fn str(&mut self) -> Result<&'a str, FrameError> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| FrameError::Malformed("string is not valid UTF-8".into()))
    }

    pub fn string(&mut self) -> Result<String, FrameError> {
        self.str().map(str::to_owned)
    }

    /// A `bytes` field, as a slice sharing the buffer (no copy).
    pub fn bytes(&mut self) -> Result<Bytes, FrameError> {
        let len = self.u32()? as usize;
        if self.remaining() < len {
            return Err(FrameError::Truncated);
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// An array count, refused if above [`MAX_ARRAY_LEN`] or if that many
    /// items of at least `min_item_len` bytes could not fit in what remains.
    pub fn count(&mut self, min_item_len: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n > MAX_ARRAY_LEN {
            return Err(FrameError::Malformed(
                format!("array of {n} items exceeds the limit of {MAX_ARRAY_LEN}").into(),
            ));
        }
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(FrameError::Truncated);
        }
        Ok(n)
    }

    pub fn vec<T: Wire>(&mut self) -> Result<Vec<T>, FrameError> {
        let n = self.count(T::MIN_LEN)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }

    pub fn option<T: Wire>(&mut self) -> Result<Option<T>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => T::decode(self).map(Some),
            _ => Err(FrameError::Malformed(
                "option flag is neither 0 nor 1".into(),
            )),
        }
    }

    /// Ends decoding: a body must be consumed exactly.
    pub fn finish(self) -> Result<(), FrameError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(FrameError::Malformed(
                format!("{n} bytes left after the body").into(),
            )),
        }
    }
}

/// Writes a `str`.
///
/// # Panics
/// If `s` is longer than `u16::MAX` bytes. Names are validated long before
/// (see [`crate::limits`]); messages go through [`put_str_truncated`].
pub fn put_str(buf: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).expect("a str field holds at most 65535 bytes");
    buf.put_u16_le(len);
    buf.put_slice(s.as_bytes());
}

/// Writes a `str`, cut at a character boundary to fit `u16::MAX` bytes: for
/// human-readable text whose exact length does not matter.
pub fn put_str_truncated(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_str(buf, &s[..end]);
}

/// Writes a `bytes` field.
///
/// # Panics
/// If `b` is 4 GiB or longer (far beyond every frame limit).
pub fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32_le(u32::try_from(b.len()).expect("a bytes field holds less than 4 GiB"));
    buf.put_slice(b);
}

/// Writes an array.
pub fn put_vec<T: Wire>(buf: &mut BytesMut, items: &[T]) {
    buf.put_u32_le(u32::try_from(items.len()).expect("an array holds less than 2^32 items"));
    for item in items {
        item.encode(buf);
    }
}

pub fn put_option<T: Wire>(buf: &mut BytesMut, v: Option<&T>) {
    match v {
        None => buf.put_u8(0),
        Some(v) => {
            buf.put_u8(1);
            v.encode(buf);
        }
    }
}

impl Wire for u32 {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(*self);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        r.u32()
    }
}

impl Wire for u64 {
    const MIN_LEN: usize = 8;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64_le(*self);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        r.u64()
    }
}

impl Wire for String {
    const MIN_LEN: usize = 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, self);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        r.string()
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, self);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        r.vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_over(v: &[u8]) -> Bytes {
        Bytes::copy_from_slice(v)
    }

    #[test]
    fn primitives_round_trip() {
        let mut w = BytesMut::new();
        w.put_u8(7);
        w.put_u16_le(0x1234);
        w.put_u32_le(0xdead_beef);
        w.put_u64_le(u64::MAX - 1);
        w.put_i64_le(-2);
        put_str(&mut w, "héllo");
        put_bytes(&mut w, b"\x00\x01");
        put_vec(&mut w, &[1u32, 2, 3]);
        put_option::<String>(&mut w, None);
        put_option(&mut w, Some(&"x".to_string()));
        let b = w.freeze();
        let mut r = Reader::new(&b);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.i64().unwrap(), -2);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(&r.bytes().unwrap()[..], b"\x00\x01");
        assert_eq!(r.vec::<u32>().unwrap(), [1, 2, 3]);
        assert_eq!(r.option::<String>().unwrap(), None);
        assert_eq!(r.option::<String>().unwrap().as_deref(), Some("x"));
        r.finish().unwrap();
    }

    #[test]
    fn underflow_is_truncated() {
        let b = reader_over(&[1, 2, 3]);
        assert_eq!(Reader::new(&b).u32(), Err(FrameError::Truncated));
        let b = reader_over(&[5, 0, b'a']);
        assert_eq!(Reader::new(&b).str(), Err(FrameError::Truncated));
        let b = reader_over(&[5, 0, 0, 0, 1]);
        assert_eq!(Reader::new(&b).bytes(), Err(FrameError::Truncated));
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let b = reader_over(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Reader::new(&b).vec::<u32>(),
            Err(FrameError::Malformed(_))
        ));
        // 3 items of 4 bytes claimed, 8 bytes present.
        let b = reader_over(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Reader::new(&b).vec::<u32>(), Err(FrameError::Truncated));
    }

    #[test]
    fn bad_utf8_option_flag_and_trailing_bytes() {
        let b = reader_over(&[2, 0, 0xc3, 0x28]);
        assert!(matches!(
            Reader::new(&b).str(),
            Err(FrameError::Malformed(_))
        ));
        let b = reader_over(&[2]);
        assert!(matches!(
            Reader::new(&b).option::<u32>(),
            Err(FrameError::Malformed(_))
        ));
        let b = reader_over(&[0]);
        assert!(matches!(
            Reader::new(&b).finish(),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_messages_keep_char_boundaries() {
        let s = "é".repeat(40_000); // 80_000 bytes
        let mut w = BytesMut::new();
        put_str_truncated(&mut w, &s);
        let b = w.freeze();
        let got = Reader::new(&b).str().unwrap();
        assert_eq!(got.len(), 65_534);
    }
}
