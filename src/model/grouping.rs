//! Error grouping key, as apm-server computes it: XXH64 (seed 0) over the
//! concatenated exception types, param message, frame identities and, as a
//! fallback, messages. Invariant: always 16 lower-case hex characters.

use super::event::{ErrorEvent, Frame};

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge(h: u64, v: u64) -> u64 {
    (h ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// XXH64 of `input` with seed 0.
pub(crate) fn xxh64(input: &[u8]) -> u64 {
    let len = input.len();
    let mut i = 0;
    let mut h = if len >= 32 {
        let (mut v1, mut v2, mut v3, mut v4) =
            (P1.wrapping_add(P2), P2, 0u64, 0u64.wrapping_sub(P1));
        while i + 32 <= len {
            v1 = round(v1, u64_at(input, i));
            v2 = round(v2, u64_at(input, i + 8));
            v3 = round(v3, u64_at(input, i + 16));
            v4 = round(v4, u64_at(input, i + 24));
            i += 32;
        }
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        merge(h, v4)
    } else {
        P5
    };
    h = h.wrapping_add(len as u64);
    while i + 8 <= len {
        h ^= round(0, u64_at(input, i));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        i += 8;
    }
    if i + 4 <= len {
        let mut a = [0u8; 4];
        a.copy_from_slice(&input[i..i + 4]);
        h ^= (u32::from_le_bytes(a) as u64).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        i += 4;
    }
    while i < len {
        h ^= (input[i] as u64).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
        i += 1;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

fn frames(buf: &mut Vec<u8>, frames: &[Frame]) -> bool {
    let mut wrote = false;
    for f in frames.iter().filter(|f| !f.exclude_from_grouping) {
        let id = [&f.module, &f.filename, &f.classname]
            .into_iter()
            .find(|s| !s.is_empty());
        if let Some(id) = id {
            buf.extend_from_slice(id.as_bytes());
            wrote = true;
        }
        if !f.function.is_empty() {
            buf.extend_from_slice(f.function.as_bytes());
            wrote = true;
        }
    }
    wrote
}

/// The grouping key of an error.
pub(crate) fn grouping_key(e: &ErrorEvent) -> String {
    let mut buf: Vec<u8> = Vec::new();
    for x in &e.exceptions {
        buf.extend_from_slice(x.type_.as_bytes());
    }
    if let Some(l) = &e.log {
        buf.extend_from_slice(l.param_message.as_bytes());
    }
    let mut wrote_frames = false;
    for x in &e.exceptions {
        wrote_frames |= frames(&mut buf, &x.stacktrace);
    }
    if !wrote_frames {
        if let Some(l) = &e.log {
            frames(&mut buf, &l.stacktrace);
        }
    }
    if buf.is_empty() {
        for x in &e.exceptions {
            buf.extend_from_slice(x.message.as_bytes());
        }
        if buf.is_empty() {
            if let Some(l) = &e.log {
                buf.extend_from_slice(l.message.as_bytes());
            }
        }
    }
    format!("{:016x}", xxh64(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_known_values() {
        assert_eq!(format!("{:016x}", xxh64(b"")), "ef46db3751d8e999");
        assert_eq!(format!("{:016x}", xxh64(b"a")), "d24ec4f1a98c6e5b");
        assert_eq!(
            format!("{:016x}", xxh64(b"Nobody inspects the spammish repetition")),
            "fbcea83c8a378bf1"
        );
    }
}
