//! PXE vendor options: the sub-options carried in option 43 (PXE specification 2.1, §2.4).
//! dhcproto keeps option 43 as raw bytes, so they are encoded and searched here.

/// Discovery control (a bit field).
pub const PXE_DISCOVERY_CONTROL: u8 = 6;
/// Boot item: server type and layer, sent by a client doing boot-server discovery.
pub const PXE_BOOT_ITEM: u8 = 71;

/// Discovery control bit 3: "if a boot file name is present, download it without discovery".
/// With this a PXE ROM boots straight from our offer (pixiecore's choice for BIOS).
pub const BOOT_FROM_FILENAME: u8 = 0x08;

/// Encodes sub-options (code, value) followed by the PXE end marker.
pub fn encode(sub_options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (code, value) in sub_options {
        // A sub-option longer than 255 bytes cannot be encoded; our values are a few bytes.
        let len = u8::try_from(value.len()).unwrap_or(u8::MAX);
        out.push(*code);
        out.push(len);
        out.extend_from_slice(&value[..usize::from(len)]);
    }
    out.push(255);
    out
}

/// Finds one sub-option's value; tolerates truncation (returns `None`).
pub fn find(option43: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut rest = option43;
    loop {
        match rest {
            [] | [255, ..] => return None,
            [0, tail @ ..] => rest = tail,
            [code, len, tail @ ..] => {
                let len = usize::from(*len);
                let value = tail.get(..len)?;
                if *code == wanted {
                    return Some(value);
                }
                rest = &tail[len..];
            }
            [_] => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let encoded = encode(&[
            (PXE_DISCOVERY_CONTROL, &[BOOT_FROM_FILENAME]),
            (PXE_BOOT_ITEM, &[0x80, 3, 0, 0]),
        ]);
        assert_eq!(encoded, [6, 1, 8, 71, 4, 0x80, 3, 0, 0, 255]);
        assert_eq!(find(&encoded, PXE_BOOT_ITEM), Some(&[0x80, 3, 0, 0][..]));
        assert_eq!(find(&encoded, 9), None);
        assert_eq!(find(&[71, 9, 1], PXE_BOOT_ITEM), None);
        assert_eq!(find(&[71], PXE_BOOT_ITEM), None);
        // The capture of an iPXE ROM's port-4011 request.
        assert_eq!(
            find(&[0x47, 4, 0x80, 3, 0, 0, 0xff], PXE_BOOT_ITEM),
            Some(&[0x80, 3, 0, 0][..])
        );
    }
}
