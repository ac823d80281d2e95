//! Identifiers that arrive as text: MAC addresses and PCI addresses.
//!
//! Each has one parser with one set of rules, used by the API, the config
//! file, the command line and the pNIC driver. They (de)serialize as their
//! canonical text so the wire format stays Firecracker's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bit 0 of the first octet: set for multicast/broadcast addresses.
const MAC_MULTICAST_BIT: u8 = 0x01;
/// Highest PCI device number on a bus (5 bits).
const PCI_MAX_DEVICE: u32 = 0x1f;
/// Highest PCI function number (3 bits).
const PCI_MAX_FUNCTION: u32 = 0x7;

/// Why a text is not a usable MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("invalid MAC address {0:?}: expected six hex octets like 06:00:ac:10:00:02")]
    Malformed(String),
    #[error("{0} is a multicast address (bit 0 of the first octet is set); a NIC needs a unicast one")]
    Multicast(MacAddr),
    #[error("00:00:00:00:00:00 is not a usable MAC address")]
    Zero,
}

/// An Ethernet MAC address a NIC may own (unicast, not zero), written
/// `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six octets, in wire order.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Only a unicast, non-zero address can be a NIC's own address.
    pub fn check_unicast(&self) -> Result<(), MacError> {
        if self.0 == [0; 6] {
            return Err(MacError::Zero);
        }
        if self.0[0] & MAC_MULTICAST_BIT != 0 {
            return Err(MacError::Multicast(*self));
        }
        Ok(())
    }
}

impl FromStr for MacAddr {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacError::Malformed(s.to_string());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in octets.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        let mac = MacAddr(octets);
        mac.check_unicast()?;
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3], o[4], o[5])
    }
}

/// Why a text is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {input:?}: {why}; expected DDDD:BB:DD.F or BB:DD.F in hex, like 0000:01:00.0")]
pub struct BdfError {
    pub input: String,
    pub why: &'static str,
}

/// A PCI function address, written `DDDD:BB:DD.F` as sysfs names it; the
/// domain may be omitted (`BB:DD.F`) and is then 0. Every field has exactly
/// its width in hex digits; device is 00-1f, function 0-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciBdf {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// `part` as a hex number of exactly `width` digits.
fn hex_exact(part: &str, width: usize) -> Option<u32> {
    if part.len() != width || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(part, 16).ok()
}

impl FromStr for PciBdf {
    type Err = BdfError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| BdfError { input: input.to_string(), why };
        let (head, function) = input.rsplit_once('.').ok_or(err("missing '.function'"))?;
        let fields: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match fields.as_slice() {
            [d, b, dev] => (*d, *b, *dev),
            [b, dev] => ("0000", *b, *dev),
            _ => return Err(err("wrong number of ':' separated fields")),
        };
        let domain = hex_exact(domain, 4).ok_or(err("domain must be 4 hex digits"))?;
        let bus = hex_exact(bus, 2).ok_or(err("bus must be 2 hex digits"))?;
        let device = hex_exact(device, 2).ok_or(err("device must be 2 hex digits"))?;
        let function = hex_exact(function, 1).ok_or(err("function must be 1 hex digit"))?;
        if device > PCI_MAX_DEVICE {
            return Err(err("device must be 00-1f"));
        }
        if function > PCI_MAX_FUNCTION {
            return Err(err("function must be 0-7"));
        }
        // The widths checked above bound every field to its type.
        Ok(PciBdf { domain: domain as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for PciBdf {
    /// The canonical sysfs spelling, `0000:01:00.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(MacAddr);
serde_via_str!(PciBdf);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_normalises_case() {
        let mac: MacAddr = "06:00:AC:10:00:02".parse().unwrap();
        assert_eq!(mac.octets(), [0x06, 0x00, 0xac, 0x10, 0x00, 0x02]);
        assert_eq!(mac.to_string(), "06:00:ac:10:00:02");
    }

    #[test]
    fn mac_rejects_malformed_and_non_unicast() {
        for bad in [
            "",
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "6:00:ac:10:00:02",
            "06-00-ac-10-00-02",
            "zz:00:ac:10:00:02",
            "+6:00:ac:10:00:02",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(err, MacError::Malformed(bad.into()));
            assert!(err.to_string().starts_with("invalid MAC address"), "{bad}: {err}");
        }
        let e = "01:00:5e:00:00:01".parse::<MacAddr>().unwrap_err().to_string();
        assert!(e.starts_with("01:00:5e:00:00:01 is a multicast address"), "{e}");
        assert!(matches!("ff:ff:ff:ff:ff:ff".parse::<MacAddr>(), Err(MacError::Multicast(_))));
        assert_eq!("00:00:00:00:00:00".parse::<MacAddr>(), Err(MacError::Zero));
    }

    #[test]
    fn bdf_parses_with_and_without_domain() {
        let full: PciBdf = "0000:01:00.0".parse().unwrap();
        assert_eq!(full, PciBdf { domain: 0, bus: 1, device: 0, function: 0 });
        assert_eq!(full, "01:00.0".parse().unwrap());
        let short: PciBdf = "3b:1f.7".parse().unwrap();
        assert_eq!(short, PciBdf { domain: 0, bus: 0x3b, device: 0x1f, function: 7 });
        assert_eq!(short.to_string(), "0000:3b:1f.7");
        assert_eq!("ABCD:EF:01.2".parse::<PciBdf>().unwrap().to_string(), "abcd:ef:01.2");
    }

    #[test]
    fn bdf_rejects_out_of_range_and_malformed() {
        let why = |s: &str| s.parse::<PciBdf>().unwrap_err().why;
        assert_eq!(why("0000:01:20.0"), "device must be 00-1f");
        assert_eq!(why("0000:01:00.8"), "function must be 0-7");
        assert_eq!(why("01:00"), "missing '.function'");
        for bad in [
            "",
            "01:00",
            "0000:01:00",
            "0:01:00.0",
            "0000:1:00.0",
            "0000:01:00.00",
            "x000:01:00.0",
            "0000:01:00.0:1",
            "00000:01:00.0",
            "0000:100:00.0",
            "1:2:3:4.0",
            ":00.0",
            "01:00.",
            "01:00.0x",
            "+1:00.0",
            " 01:00.0",
            "../../etc",
        ] {
            let e = bad.parse::<PciBdf>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid PCI address {bad:?}: ")), "{bad}: {e}");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let mac: MacAddr = serde_json::from_str("\"02:00:00:00:00:01\"").unwrap();
        assert_eq!(serde_json::to_string(&mac).unwrap(), "\"02:00:00:00:00:01\"");
        let err = serde_json::from_str::<PciBdf>("\"nope\"").unwrap_err().to_string();
        assert!(
            err.contains("invalid PCI address \\\"nope\\\"") || err.contains("invalid PCI address \"nope\""),
            "{err}"
        );
    }
}
