//! Option negotiation: RFC 2347 (framework), 2348 (blksize), 2349 (timeout, tsize), 7440
//! (windowsize).
//!
//! The OACK follows what EDK2 enforces (`Mtftp4Option.c`): only options the client sent, numeric
//! values never above what it asked, `timeout` echoed exactly. An OACK that breaks any of these
//! makes UEFI firmware abort with "Malformatted OACK packet", so the rules are not cosmetic.

use crate::packet::{DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE};

/// The options we understand, as the client asked for them. A value that does not parse or is
/// out of its RFC range leaves the option unset: RFC 2347 lets a server drop any option, and
/// refusing the whole transfer over one bad value helps nobody (tftp-hpa does the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestedOptions {
    pub blksize: Option<u16>,
    pub timeout: Option<u8>,
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

impl RequestedOptions {
    /// Interprets raw name/value pairs. Names are case-insensitive; when a name repeats, the
    /// first occurrence wins; unknown names are ignored.
    pub fn parse(raw: &[(&str, &str)]) -> RequestedOptions {
        let mut options = RequestedOptions::default();
        let mut seen = [false; 4];
        for (name, value) in raw {
            let slot = match name.to_ascii_lowercase().as_str() {
                "blksize" => 0,
                "timeout" => 1,
                "tsize" => 2,
                "windowsize" => 3,
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            let Ok(number) = value.trim().parse::<u64>() else {
                continue;
            };
            match slot {
                // Values above the RFC maximum are clamped later rather than dropped: a client
                // that asks for 65535 still wants "as large as you allow".
                0 if number >= u64::from(MIN_BLKSIZE) => {
                    options.blksize = Some(number.min(u64::from(u16::MAX)) as u16)
                }
                1 if (1..=255).contains(&number) => options.timeout = Some(number as u8),
                2 => options.tsize = Some(number),
                3 if (1..=65535).contains(&number) => options.windowsize = Some(number as u16),
                _ => {}
            }
        }
        options
    }

    pub fn is_empty(&self) -> bool {
        *self == RequestedOptions::default()
    }
}

/// Server-side limits on what a client may negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationLimits {
    /// Largest block size we grant. The driver lowers it per transfer to the egress interface MTU
    /// minus IP and UDP headers, so a DATA packet is never fragmented.
    pub max_blksize: u16,
    pub max_windowsize: u16,
    /// Caps windowsize × blksize (tftp-hpa's `--window-bytes`): a large window of large blocks
    /// would put megabytes in flight per client during a boot storm.
    pub max_window_bytes: u32,
}

impl Default for NegotiationLimits {
    fn default() -> Self {
        NegotiationLimits {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The agreed transfer parameters and the OACK that announces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// Retransmission interval the client asked for (RFC 2349), honoured exactly.
    pub timeout: Option<u8>,
    /// Option names and values for the OACK, in a fixed order. Empty means "no OACK": the
    /// transfer runs as plain RFC 1350.
    pub oack: Vec<(&'static str, String)>,
}

/// Negotiates a transfer. `tsize_answer` is what to put in a `tsize` reply: the file size for a
/// read, the client's own value for a write, or `None` to omit it (netascii, where the size on
/// the wire is not known in advance).
pub fn negotiate(
    requested: &RequestedOptions,
    limits: &NegotiationLimits,
    tsize_answer: Option<u64>,
) -> Negotiated {
    let mut oack = Vec::new();
    let cap = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let blksize = match requested.blksize {
        Some(asked) => {
            let granted = asked.min(cap);
            oack.push(("blksize", granted.to_string()));
            granted
        }
        None => DEFAULT_BLKSIZE,
    };
    if let Some(timeout) = requested.timeout {
        oack.push(("timeout", timeout.to_string()));
    }
    if let (Some(_), Some(size)) = (requested.tsize, tsize_answer) {
        oack.push(("tsize", size.to_string()));
    }
    let windowsize = match requested.windowsize {
        Some(asked) => {
            let by_bytes = (limits.max_window_bytes / u32::from(blksize)).clamp(1, 65535) as u16;
            let granted = asked.min(limits.max_windowsize.max(1)).min(by_bytes);
            oack.push(("windowsize", granted.to_string()));
            granted
        }
        None => 1,
    };
    Negotiated {
        blksize,
        windowsize,
        timeout: requested.timeout,
        oack,
    }
}

/// Renders options as `name=value` pairs for logs.
pub fn describe(options: &[(&str, String)]) -> String {
    let mut text = String::new();
    for (name, value) in options {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(name);
        text.push('=');
        text.push_str(value);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_case_insensitively_first_wins_and_ignores_garbage() {
        let raw = [
            ("BLKSIZE", "1468"),
            ("blksize", "512"),
            ("tsize", "0"),
            ("timeout", "0"),
            ("windowsize", "x"),
            ("multicast", ""),
        ];
        let options = RequestedOptions::parse(&raw);
        assert_eq!(
            options,
            RequestedOptions {
                blksize: Some(1468),
                timeout: None,
                tsize: Some(0),
                windowsize: None,
            }
        );
        assert!(RequestedOptions::parse(&[("blksize", "7")]).is_empty());
        assert!(RequestedOptions::parse(&[("timeout", "256")]).is_empty());
        assert!(RequestedOptions::parse(&[("windowsize", "0")]).is_empty());
        assert!(RequestedOptions::parse(&[("blksize", "-1")]).is_empty());
        assert!(RequestedOptions::parse(&[("tsize", "99999999999999999999999")]).is_empty());
    }

    #[test]
    fn edk2_probe_gets_exactly_what_it_asked() {
        let requested =
            RequestedOptions::parse(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]);
        let n = negotiate(&requested, &NegotiationLimits::default(), Some(1_048_576));
        assert_eq!(
            n.oack,
            vec![
                ("blksize", "1468".to_string()),
                ("tsize", "1048576".to_string()),
                ("windowsize", "4".to_string()),
            ]
        );
        assert_eq!((n.blksize, n.windowsize), (1468, 4));
    }

    #[test]
    fn caps_apply_and_timeout_is_echoed() {
        let limits = NegotiationLimits {
            max_blksize: 1432,
            max_windowsize: 8,
            max_window_bytes: 1432 * 4,
        };
        let requested = RequestedOptions::parse(&[
            ("blksize", "65535"),
            ("timeout", "3"),
            ("windowsize", "16"),
        ]);
        let n = negotiate(&requested, &limits, None);
        assert_eq!(n.blksize, 1432);
        assert_eq!(n.windowsize, 4);
        assert_eq!(n.timeout, Some(3));
        assert_eq!(describe(&n.oack), "blksize=1432 timeout=3 windowsize=4");
    }

    #[test]
    fn no_options_means_no_oack() {
        let n = negotiate(
            &RequestedOptions::default(),
            &NegotiationLimits::default(),
            Some(5),
        );
        assert!(n.oack.is_empty());
        assert_eq!((n.blksize, n.windowsize), (512, 1));
        // tsize asked in netascii: omitted, and with nothing else asked there is no OACK.
        let n = negotiate(
            &RequestedOptions::parse(&[("tsize", "0")]),
            &NegotiationLimits::default(),
            None,
        );
        assert!(n.oack.is_empty());
    }

    proptest! {
        #[test]
        fn oack_never_exceeds_the_request(
            blk in proptest::option::of(0u64..70000),
            ws in proptest::option::of(0u64..70000),
            to in proptest::option::of(0u64..300),
            cap in 8u16..=65464,
            wcap in 1u16..100,
        ) {
            let mut raw = Vec::new();
            let (b, w, t) = (blk.map(|v| v.to_string()), ws.map(|v| v.to_string()), to.map(|v| v.to_string()));
            if let Some(v) = &b { raw.push(("blksize", v.as_str())); }
            if let Some(v) = &w { raw.push(("windowsize", v.as_str())); }
            if let Some(v) = &t { raw.push(("timeout", v.as_str())); }
            let requested = RequestedOptions::parse(&raw);
            let limits = NegotiationLimits { max_blksize: cap, max_windowsize: wcap, max_window_bytes: 1 << 20 };
            let n = negotiate(&requested, &limits, Some(1));
            for (name, value) in &n.oack {
                let asked: u64 = raw.iter().find(|(r, _)| r == name).unwrap().1.parse().unwrap();
                let granted: u64 = value.parse().unwrap();
                if *name == "timeout" { prop_assert_eq!(granted, asked); } else { prop_assert!(granted <= asked); }
            }
            let expected_blksize = match blk {
                Some(b) if b >= 8 => (b.min(65535) as u16).min(cap),
                _ => DEFAULT_BLKSIZE,
            };
            prop_assert_eq!(n.blksize, expected_blksize);
            prop_assert!(n.windowsize >= 1);
        }
    }
}
