//! The small binary encoding of what the coordinator stores for its restarts (the state
//! snapshot, the planned graph): LEB128 integers, length-prefixed bytes, a magic at the front
//! and a SHA-256 of everything before it at the end, so that a truncated or altered copy is
//! refused before a field of it is read.

use sha2::{Digest, Sha256};

/// The bytes end early or hold a value out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Why sealed bytes were refused before their fields were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    Magic,
    Checksum,
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends the checksum of everything written so far.
pub fn seal(out: &mut Vec<u8>) {
    let sum = Sha256::digest(&out[..]);
    out.extend_from_slice(&sum);
}

/// The fields after `magic`, once the magic and the checksum that [`seal`] appended match.
pub fn unseal<'a>(bytes: &'a [u8], magic: &[u8]) -> Result<&'a [u8], Unsealed> {
    if bytes.len() < magic.len() + 32 || &bytes[..magic.len()] != magic {
        return Err(Unsealed::Magic);
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body)[..] != *sum {
        return Err(Unsealed::Checksum);
    }
    Ok(&body[magic.len()..])
}

/// Reads fields in order from the front.
pub struct Reader<'a> {
    pub b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Malformed)
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        u32::try_from(self.varint()?).map_err(|_| Malformed)
    }

    pub fn usize(&mut self) -> Result<usize, Malformed> {
        usize::try_from(self.varint()?).map_err(|_| Malformed)
    }

    pub fn byte(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.b.split_first().ok_or(Malformed)?;
        self.b = rest;
        Ok(b)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.usize()?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_fields_read_back_and_any_changed_byte_is_refused() {
        let mut out = b"MAGIC".to_vec();
        put_varint(&mut out, 300);
        put_bytes(&mut out, b"abc");
        seal(&mut out);
        let mut r = Reader {
            b: unseal(&out, b"MAGIC").unwrap(),
        };
        assert_eq!(r.varint(), Ok(300));
        assert_eq!(r.string().as_deref(), Ok("abc"));
        assert!(r.b.is_empty());
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 1;
            assert!(unseal(&bad, b"MAGIC").is_err(), "byte {i}");
        }
        assert_eq!(unseal(&out[..10], b"MAGIC"), Err(Unsealed::Magic));
    }
}
