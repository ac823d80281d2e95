//! Typed identifiers that arrive as strings: MAC addresses and PCI addresses.
//!
//! They (de)serialize as their canonical text so the wire format stays the
//! Firecracker one, while the VMM receives already-parsed values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bit 0 of the first octet: set for multicast/broadcast addresses.
const MAC_MULTICAST_BIT: u8 = 0x01;
/// Highest PCI device number on a bus (5 bits).
const PCI_MAX_DEVICE: u8 = 0x1f;
/// Highest PCI function number (3 bits).
const PCI_MAX_FUNCTION: u8 = 0x7;

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six octets, in wire order.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Only a unicast, non-zero address can be a NIC's own address.
    fn check_unicast(&self) -> Result<(), String> {
        if self.0 == [0; 6] {
            return Err("00:00:00:00:00:00 is not a usable MAC address".into());
        }
        if self.0[0] & MAC_MULTICAST_BIT != 0 {
            return Err(format!(
                "{self} is a multicast address (bit 0 of the first octet is set); a NIC needs a unicast one"
            ));
        }
        Ok(())
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("\"{s}\" is not a MAC address; expected six hex octets like 06:00:ac:10:00:02");
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

/// A PCI address `DDDD:BB:DD.F` (the domain may be omitted and is then 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciBdf {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl FromStr for PciBdf {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("\"{s}\" is not a PCI address; expected DDDD:BB:DD.F like 0000:01:00.0");
        let hex = |part: &str, width: usize| -> Result<u32, String> {
            if part.len() != width || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(part, 16).map_err(|_| bad())
        };
        let (head, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let fields: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match fields.as_slice() {
            [d, b, dev] => (hex(d, 4)?, hex(b, 2)?, hex(dev, 2)?),
            [b, dev] => (0, hex(b, 2)?, hex(dev, 2)?),
            _ => return Err(bad()),
        };
        let function = hex(function, 1)?;
        if device > u32::from(PCI_MAX_DEVICE) {
            return Err(format!("\"{s}\": PCI device number {device:#x} is above {PCI_MAX_DEVICE:#x}"));
        }
        if function > u32::from(PCI_MAX_FUNCTION) {
            return Err(format!("\"{s}\": PCI function number {function} is above {PCI_MAX_FUNCTION}"));
        }
        // The widths checked above bound every field to its type.
        Ok(PciBdf { domain: domain as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for PciBdf {
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
            assert!(err.contains("is not a MAC address"), "{bad}: {err}");
        }
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap_err().contains("multicast"));
        assert!("ff:ff:ff:ff:ff:ff".parse::<MacAddr>().unwrap_err().contains("multicast"));
        assert!("00:00:00:00:00:00".parse::<MacAddr>().unwrap_err().contains("not a usable"));
    }

    #[test]
    fn bdf_parses_with_and_without_domain() {
        let full: PciBdf = "0000:01:00.0".parse().unwrap();
        assert_eq!(full, PciBdf { domain: 0, bus: 1, device: 0, function: 0 });
        let short: PciBdf = "3b:1f.7".parse().unwrap();
        assert_eq!(short, PciBdf { domain: 0, bus: 0x3b, device: 0x1f, function: 7 });
        assert_eq!(short.to_string(), "0000:3b:1f.7");
        assert_eq!("ABCD:EF:01.2".parse::<PciBdf>().unwrap().to_string(), "abcd:ef:01.2");
    }

    #[test]
    fn bdf_rejects_out_of_range_and_malformed() {
        assert!("0000:01:20.0".parse::<PciBdf>().unwrap_err().contains("device number"));
        assert!("0000:01:00.8".parse::<PciBdf>().unwrap_err().contains("function number"));
        for bad in [
            "",
            "01:00",
            "0000:01:00",
            "0:01:00.0",
            "0000:1:00.0",
            "0000:01:00.00",
            "x000:01:00.0",
            "0000:01:00.0:1",
            "../../etc",
        ] {
            assert!(bad.parse::<PciBdf>().unwrap_err().contains("is not a PCI address"), "{bad}");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let mac: MacAddr = serde_json::from_str("\"02:00:00:00:00:01\"").unwrap();
        assert_eq!(serde_json::to_string(&mac).unwrap(), "\"02:00:00:00:00:01\"");
        let err = serde_json::from_str::<PciBdf>("\"nope\"").unwrap_err().to_string();
        assert!(err.contains("is not a PCI address"), "{err}");
    }
}
