//! GPT-2's byte-level alphabet: each of the 256 byte values is written as one printable code
//! point in byte-level BPE vocabularies (`Ġ` for a space, `Ċ` for a newline, bytes that are
//! printable Latin-1 as themselves). This module owns that bijection and nothing else.

/// The code point GPT-2 writes for byte `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte a GPT-2 alphabet code point stands for, `None` for code points outside it.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as usize;
    if cp < CHAR_TO_BYTE.len() {
        let b = CHAR_TO_BYTE[cp];
        (b >= 0).then_some(b as u8)
    } else {
        None
    }
}

/// Bytes that are printable Latin-1 keep their own code point.
const fn keeps_own_code_point(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff)
}

/// The others (controls, space, 0x7f-0xa0, soft hyphen) get 256, 257, ... in byte order.
static BYTE_TO_CHAR: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let cp = if keeps_own_code_point(b as u8) {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        t[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0', // unreachable: every value is below 0x144
        };
        b += 1;
    }
    t
};

/// Inverse of [`BYTE_TO_CHAR`]: index = code point (all are below 256 + 68), value = byte or -1.
static CHAR_TO_BYTE: [i16; 324] = {
    let mut t = [-1i16; 324];
    let mut b = 0usize;
    while b < 256 {
        t[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_gpt2_code_points() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0), 'Ā');
        assert_eq!(byte_to_char(0xad), 'Ń');
        assert_eq!(byte_to_char(0xe5), 'å');
    }

    #[test]
    fn mapping_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c), "byte {b} maps to a code point already used");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
        assert_eq!(
            char_to_byte(char::from_u32(0x143).unwrap_or('x')),
            Some(0xad)
        );
    }
}
