//! Salesforce record ids: 15-character case-sensitive ids and their
//! 18-character case-insensitive form with the 3-character checksum.
//!
//! Ids are generated as `<key prefix><pod "0A"><10 base-62 digits>` plus the
//! checksum. This module must never accept an id whose checksum is wrong.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Why a string is not a Salesforce id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid id length {0} (expected 15 or 18 characters)")]
    Length(usize),
    #[error("id contains a character that is not alphanumeric")]
    Character,
    #[error("id checksum does not match")]
    Checksum,
}

/// The 3-character case checksum of a 15-character id.
pub fn checksum(id15: &[u8]) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (chunk, slot) in id15.chunks(5).zip(out.iter_mut()) {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        *slot = CHECKSUM_ALPHABET[bits];
    }
    out
}

/// Builds the 18-character id for object key `prefix` (3 characters) and sequence number `n`.
pub fn make_id(prefix: &str, n: u64) -> String {
    let mut body = [b'0'; 10];
    let mut v = n;
    for slot in body.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let mut id = String::with_capacity(18);
    id.push_str(prefix);
    id.push_str("0A");
    id.push_str(std::str::from_utf8(&body).unwrap_or("0000000000"));
    let sum = checksum(id.as_bytes());
    id.push_str(std::str::from_utf8(&sum).unwrap_or("AAA"));
    id
}

/// Normalises a 15- or 18-character id to its canonical 18-character form.
/// An 18-character id may come in any letter case: its checksum restores the case.
pub fn normalize(id: &str) -> Result<String, IdError> {
    let bytes = id.as_bytes();
    if !bytes.iter().all(|b| b.is_ascii_alphanumeric()) {
        return Err(IdError::Character);
    }
    match bytes.len() {
        15 => {
            let mut s = id.to_string();
            s.push_str(std::str::from_utf8(&checksum(bytes)).map_err(|_| IdError::Character)?);
            Ok(s)
        }
        18 => {
            // Restore the case of the first 15 characters from the checksum.
            let mut body: Vec<u8> = bytes[..15].to_vec();
            for (chunk_index, sum_char) in bytes[15..].iter().enumerate() {
                let upper = sum_char.to_ascii_uppercase();
                let bits = CHECKSUM_ALPHABET
                    .iter()
                    .position(|c| *c == upper)
                    .ok_or(IdError::Checksum)?;
                for i in 0..5 {
                    let c = &mut body[chunk_index * 5 + i];
                    if bits & (1 << i) != 0 {
                        if !c.is_ascii_alphabetic() {
                            return Err(IdError::Checksum);
                        }
                        *c = c.to_ascii_uppercase();
                    } else {
                        *c = c.to_ascii_lowercase();
                    }
                }
            }
            let sum = checksum(&body);
            let mut s = String::from_utf8(body).map_err(|_| IdError::Character)?;
            s.push_str(std::str::from_utf8(&sum).map_err(|_| IdError::Character)?);
            Ok(s)
        }
        n => Err(IdError::Length(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_known_id() {
        // A well-known example: 001A0000006Vm9r -> 001A0000006Vm9rIAC.
        assert_eq!(normalize("001A0000006Vm9r").unwrap(), "001A0000006Vm9rIAC");
    }

    #[test]
    fn made_ids_round_trip() {
        for n in [0, 1, 61, 62, 12345, 987654321] {
            let id = make_id("006", n);
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("0060A"));
            assert_eq!(normalize(&id).unwrap(), id);
            assert_eq!(normalize(&id[..15]).unwrap(), id);
        }
        assert_ne!(make_id("006", 1), make_id("006", 2));
    }

    #[test]
    fn eighteen_char_ids_are_case_insensitive() {
        let id = make_id("003", 12345 * 62 * 62);
        assert_eq!(normalize(&id.to_ascii_lowercase()).unwrap(), id);
    }

    #[test]
    fn bad_ids_are_refused() {
        assert_eq!(normalize("006abc"), Err(IdError::Length(6)));
        assert_eq!(normalize("006-0A0000000001"), Err(IdError::Character));
        // checksum says "uppercase" where the body has a digit
        assert_eq!(normalize("0060A0000000001555"), Err(IdError::Checksum));
    }
}
