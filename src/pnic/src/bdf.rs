//! PCI addresses ("BDF") as given on the command line.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid PCI address {input:?}: {why}; expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:01:00.0")]
pub struct BdfError {
    pub input: String,
    pub why: &'static str,
}

/// A PCI function address: domain, bus, device (0-31), function (0-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bdf {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

fn hex_field(s: &str, max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl FromStr for Bdf {
    type Err = BdfError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| BdfError { input: input.to_string(), why };
        let s = input.trim();
        let (rest, function) = s.rsplit_once('.').ok_or(err("missing '.function'"))?;
        let function = hex_field(function, 1).ok_or(err("function must be one hex digit"))?;
        if function > 7 {
            return Err(err("function must be 0-7"));
        }
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [b, d] => ("0", *b, *d),
            [dom, b, d] => (*dom, *b, *d),
            _ => return Err(err("wrong number of ':' separated fields")),
        };
        let domain = hex_field(domain, 4).ok_or(err("domain must be 1-4 hex digits"))?;
        let bus = hex_field(bus, 2).ok_or(err("bus must be 1-2 hex digits"))?;
        let device = hex_field(device, 2).ok_or(err("device must be 1-2 hex digits"))?;
        if device > 0x1f {
            return Err(err("device must be 00-1f"));
        }
        Ok(Bdf { domain: domain as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for Bdf {
    /// The canonical sysfs spelling, `0000:01:00.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let a: Bdf = "0000:01:00.0".parse().unwrap();
        let b: Bdf = "01:00.0".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0000:01:00.0");
        let c: Bdf = "abcd:ff:1f.7".parse().unwrap();
        assert_eq!(c, Bdf { domain: 0xabcd, bus: 0xff, device: 0x1f, function: 7 });
        assert_eq!(c.to_string(), "abcd:ff:1f.7");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "01:00",
            "0000:01:00.8",
            "01:20.0",
            "1:2:3:4.0",
            "0000:100:00.0",
            "zz:00.0",
            "00000:01:00.0",
            "01:00.",
            ":00.0",
            "01:00.0x",
            "+1:00.0",
        ] {
            let e = bad.parse::<Bdf>().unwrap_err();
            assert!(e.to_string().contains("invalid PCI address"), "{bad}: {e}");
        }
    }
}
