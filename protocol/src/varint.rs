//! LEB128 varints (unsigned) and zigzag varints (signed), as used inside
//! records. Decoders return `None` on truncated or over-long input.

/// Longest encoding of a 64-bit value.
pub const MAX_LEN: usize = 10;

/// Writes `v` into `out` and returns the number of bytes written.
/// `out` must hold at least [`MAX_LEN`] bytes.
pub fn put_u64(out: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

pub fn put_i64(out: &mut [u8], v: i64) -> usize {
    put_u64(out, zigzag(v))
}

pub fn len_u64(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn len_i64(v: i64) -> usize {
    len_u64(zigzag(v))
}

/// Reads a varint from the start of `buf`: the value and the bytes it took.
pub fn get_u64(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().take(MAX_LEN).enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == MAX_LEN - 1 && b > 1 {
            return None; // more than 64 bits
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

pub fn get_i64(buf: &[u8]) -> Option<(i64, usize)> {
    get_u64(buf).map(|(v, n)| (unzigzag(v), n))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn round_trip_u64(v: u64) {
            let mut b = [0u8; MAX_LEN];
            let n = put_u64(&mut b, v);
            proptest::prop_assert_eq!(n, len_u64(v));
            proptest::prop_assert_eq!(get_u64(&b[..n]), Some((v, n)));
            proptest::prop_assert_eq!(get_u64(&b[..n - 1]), None);
        }

        #[test]
        fn round_trip_i64(v: i64) {
            let mut b = [0u8; MAX_LEN];
            let n = put_i64(&mut b, v);
            proptest::prop_assert_eq!(n, len_i64(v));
            proptest::prop_assert_eq!(get_i64(&b[..n]), Some((v, n)));
        }
    }

    #[test]
    fn rejects_overlong() {
        assert_eq!(get_u64(&[0xff; 11]), None);
        assert_eq!(
            get_u64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }
}
