//! ACPI tables for the direct-booted guest: RSDP → XSDT → {FADT → DSDT, MADT}.
//!
//! The platform is "hardware-reduced" ACPI (no PM1 blocks, SCI, PM timer, GPEs
//! or legacy 8259 model), as in Firecracker and Cloud Hypervisor. The tables give
//! Linux three things it cannot get otherwise on a direct boot:
//! - SMP topology: the MADT lists one enabled local APIC per vCPU (APIC ID = vCPU
//!   index) and the IOAPIC;
//! - clean power-off/reboot: the FADT points at the sleep control/status and reset
//!   registers of [`AcpiPmDevice`](crate::devices::legacy::acpi_pm::AcpiPmDevice) and
//!   the DSDT has `\_S5_`;
//! - interrupts of legacy devices: with hardware-reduced ACPI Linux installs a null
//!   legacy PIC and maps no ISA IRQs by itself, so COM1 and the i8042 are described
//!   in the DSDT (their `_CRS` makes PNP-ACPI register GSIs 4 and 1 with the IOAPIC).
//!
//! Everything lives in the BIOS area `ACPI_TABLES_START..ACPI_TABLES_END`, which
//! must be guest RAM marked reserved in the e820 map. The RSDP sits at its start,
//! on the 16-byte-aligned legacy scan path (0xE0000-0xFFFFF), so Linux finds it even
//! without `boot_params.acpi_rsdp_addr`.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO, ONE,
};
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap};

use crate::devices::legacy::acpi_pm::{
    PM_REGS_LEN, RESET_REG_OFFSET, RESET_VALUE, S5_SLP_TYP, SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET,
};
use crate::layout;

/// Start of the guest-physical area holding all ACPI tables (reserve it in e820).
pub const ACPI_TABLES_START: u64 = layout::ACPI_START;
/// End (exclusive) of the ACPI area: the top of the legacy BIOS area.
pub const ACPI_TABLES_END: u64 = 0x0010_0000;
/// Where the RSDP goes: the start of the legacy RSDP scan range.
pub const RSDP_ADDR: u64 = ACPI_TABLES_START;
// The e820 map reserves EBDA_START..HIMEM_START, so the area must lie inside it, and
// the port range the VMM gives the PM device must cover its registers.
const _: () = assert!(layout::EBDA_START <= ACPI_TABLES_START && ACPI_TABLES_END <= layout::HIMEM_START);
const _: () = assert!(layout::ACPI_PM_PORT_LEN as u64 == PM_REGS_LEN);
/// Table alignment inside the area (the RSDP scan needs 16).
const TABLE_ALIGN: u64 = 16;

/// OEM identification written in every table header.
const OEM_ID: [u8; 6] = *b"SHIMVM";
const OEM_REVISION: u32 = 1;
/// FADT "hypervisor vendor identity" (ACPI 6.0+), informational.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"SHIMVMM\0";
/// DSDT revision 2: AML integers are 64-bit.
const DSDT_REVISION: u8 = 2;
/// MADT revision of ACPI 6.2+ (enabled LAPICs are usable regardless).
const MADT_REVISION: u8 = 5;

/// Local APIC and IOAPIC, where KVM's in-kernel irqchip emulates them (MADT
/// fields are 32-bit).
const LAPIC_ADDR: u32 = layout::APIC_START as u32;
const IOAPIC_ADDR: u32 = layout::IOAPIC_START as u32;
const _: () = assert!(layout::APIC_START <= u32::MAX as u64);
const _: () = assert!(layout::IOAPIC_START <= u32::MAX as u64);
/// IOAPIC ID: KVM's IOAPIC resets to ID 0, as QEMU's tables also say.
const IOAPIC_ID: u8 = 0;
/// The single IOAPIC serves GSIs 0..IOAPIC_PINS.
const IOAPIC_GSI_BASE: u32 = 0;
pub const IOAPIC_PINS: u32 = 24;
/// xAPIC IDs are 8-bit and 0xFF is the broadcast ID, so at most 254 processor
/// entries with IDs 0..=253 fit (the VMM must give vCPU i APIC ID i).
pub const MAX_CPUS: u8 = 254;

/// MADT layout (ACPI 6.5 §5.2.12): header, then the local APIC address and flags.
const MADT_LAPIC_ADDR_OFFSET: usize = 36;
const MADT_FLAGS_OFFSET: usize = 40;
const MADT_HEADER_LEN: u32 = 44;
/// MADT flags: PCAT_COMPAT is left clear; a hardware-reduced guest never uses
/// the 8259s.
const MADT_FLAGS: u32 = 0;
/// Local APIC NMI structure (type 4): all processors, LINT1, bus-conforming
/// polarity/trigger, i.e. the wiring of a PC (and of KVM's LAPIC).
const MADT_TYPE_LAPIC_NMI: u8 = 4;
const MADT_LAPIC_NMI_LEN: u8 = 6;
const ACPI_ALL_PROCESSORS: u8 = 0xFF;
const MPS_INTI_FLAGS_CONFORMS: u16 = 0;
const LAPIC_NMI_LINT: u8 = 1;
// No Interrupt Source Override for IRQ0→GSI2: that one describes boards (and QEMU's
// own GSI routing) whose PIT is wired to IOAPIC pin 2. With KVM's default routing
// (GSI n = IOAPIC pin n) the in-kernel PIT raises pin 0, so the override would be
// wrong; and a hardware-reduced Linux does not use the PIT as its timer anyway.

/// FADT IA-PC boot architecture flags (ACPI 6.5 §5.2.9.3).
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// i8042 present (Linux keeps probing it: keyboard, `reboot=k`), no VGA, and no
/// CMOS RTC (shimvmm emulates none; Linux then skips registering rtc-cmos).
const IAPC_BOOT_ARCH: u16 = IAPC_BOOT_ARCH_8042 | IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT;
/// Sleep/reset registers are single bytes in I/O space.
const PM_REG_BIT_WIDTH: u8 = 8;

/// Legacy devices described in the DSDT, where the VMM puts its 16550 and i8042.
const COM1_PORT: u16 = layout::COM1_PORT;
const COM1_PORT_LEN: u8 = layout::COM_PORT_LEN as u8;
const COM1_GSI: u32 = layout::SERIAL_IRQ;
const I8042_DATA_PORT: u16 = layout::I8042_PORT;
/// The command/status port sits 4 above the data port on every PC.
const I8042_COMMAND_PORT: u16 = layout::I8042_PORT + 4;
const I8042_KBD_GSI: u32 = layout::I8042_KBD_IRQ;

/// `V000`..`V255`: virtio-mmio device names in the DSDT.
pub const MAX_MMIO_DEVICES: usize = 256;
/// Linux's ACPI ID for a virtio-mmio transport (drivers/virtio/virtio_mmio.c).
const VIRTIO_MMIO_HID: &str = "LNRO0005";

/// Errors building or placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI: the guest needs at least one vCPU")]
    NoCpus,
    #[error("ACPI: {0} vCPUs exceed the {MAX_CPUS} that 8-bit xAPIC IDs can address")]
    TooManyCpus(u8),
    #[error("ACPI: PM port {0:#x} leaves no room for the {PM_REGS_LEN} sleep registers below port 0x10000")]
    PmPortRange(u16),
    #[error("ACPI: PM ports {port:#x}..{end:#x} overlap the {what} ports; pick another PM port (e.g. 0x600)")]
    PmPortOverlap { port: u16, end: u32, what: &'static str },
    #[error("ACPI: {0} virtio-mmio devices exceed the {MAX_MMIO_DEVICES} the DSDT can name")]
    TooManyMmioDevices(usize),
    #[error("ACPI: virtio-mmio device {index} at {base:#x} (length {len:#x}) must be non-empty and end below 4 GiB")]
    MmioRange { index: usize, base: u64, len: u64 },
    #[error("ACPI: virtio-mmio devices {first} and {second} overlap; give each its own MMIO window")]
    MmioOverlap { first: usize, second: usize },
    #[error("ACPI: virtio-mmio device {index} uses GSI {gsi}, but the IOAPIC only has GSIs 0..{IOAPIC_PINS}")]
    MmioGsi { index: usize, gsi: u32 },
    #[error("ACPI: the tables need {needed} bytes but only {available} are reserved at {ACPI_TABLES_START:#x}; describe fewer devices")]
    TooLarge { needed: u64, available: u64 },
    #[error(
        "ACPI: guest memory does not cover {start:#x}..{end:#x}; guest RAM must start at 0 and span the first MiB"
    )]
    NotInGuestMemory { start: u64, end: u64 },
    #[error("ACPI: writing the {table} at {addr:#x}: {source}")]
    Write { table: &'static str, addr: u64, source: GuestMemoryError },
}

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiLayout {
    /// vCPUs; vCPU i must have APIC ID i.
    pub num_cpus: u8,
    /// First I/O port of [`AcpiPmDevice`](crate::devices::legacy::acpi_pm::AcpiPmDevice)
    /// (sleep control at +0, sleep status at +1, reset register = sleep control).
    pub pm_port: u16,
    /// virtio-mmio windows `(base, len, gsi)` to describe in the DSDT as `LNRO0005`
    /// devices. Leave it EMPTY when the devices are passed on the kernel command
    /// line (`virtio_mmio.device=`): Linux would otherwise create each one twice.
    pub mmio_devices: Vec<(u64, u64, u32)>,
    /// Describe COM1 (0x3F8, IRQ 4) in the DSDT.
    pub serial: bool,
}

/// Builds all tables, writes them into `ACPI_TABLES_START..ACPI_TABLES_END` and
/// returns the RSDP's address (also usable as `boot_params.acpi_rsdp_addr`).
pub fn create_acpi_tables(mem: &GuestMemoryMmap<()>, layout: &AcpiLayout) -> Result<GuestAddress, AcpiError> {
    validate(layout)?;

    let mut placer = Placer::new();
    let rsdp_addr = placer.place(Rsdp::len() as u64)?;
    debug_assert_eq!(rsdp_addr, RSDP_ADDR);

    let dsdt = build_dsdt(layout);
    let dsdt_addr = placer.place(dsdt.len() as u64)?;
    let fadt = build_fadt(layout.pm_port, dsdt_addr);
    let fadt_addr = placer.place(fadt.len() as u64)?;
    let madt = build_madt(layout.num_cpus);
    let madt_addr = placer.place(madt.len() as u64)?;
    let mut xsdt = XSDT::new(OEM_ID, *b"SHIMXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = aml_bytes(&xsdt);
    let xsdt_addr = placer.place(xsdt.len() as u64)?;
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    // Check the whole span before writing anything, so a failure leaves no half-set
    // tables behind.
    let used = placer.next - ACPI_TABLES_START;
    if !GuestMemoryBackend::check_range(mem, GuestAddress(ACPI_TABLES_START), used as usize) {
        return Err(AcpiError::NotInGuestMemory { start: ACPI_TABLES_START, end: placer.next });
    }
    for (table, addr, bytes) in [
        ("RSDP", rsdp_addr, &rsdp),
        ("DSDT", dsdt_addr, &dsdt),
        ("FADT", fadt_addr, &fadt),
        ("MADT", madt_addr, &madt),
        ("XSDT", xsdt_addr, &xsdt),
    ] {
        mem.write_slice(bytes, GuestAddress(addr)).map_err(|source| AcpiError::Write { table, addr, source })?;
        log::debug!("acpi: {table} at {addr:#x}, {} bytes", bytes.len());
    }
    Ok(GuestAddress(rsdp_addr))
}

fn validate(layout: &AcpiLayout) -> Result<(), AcpiError> {
    match layout.num_cpus {
        0 => return Err(AcpiError::NoCpus),
        n if n > MAX_CPUS => return Err(AcpiError::TooManyCpus(n)),
        _ => {}
    }

    let port = layout.pm_port;
    let pm_end = u32::from(port) + PM_REGS_LEN as u32;
    if pm_end > 0x1_0000 {
        return Err(AcpiError::PmPortRange(port));
    }
    let mut legacy = vec![("i8042", I8042_DATA_PORT, I8042_DATA_PORT + layout::I8042_PORT_LEN)];
    if layout.serial {
        legacy.push(("COM1", COM1_PORT, COM1_PORT + u16::from(COM1_PORT_LEN)));
    }
    for (what, start, end) in legacy {
        if u32::from(port) < u32::from(end) && u32::from(start) < pm_end {
            return Err(AcpiError::PmPortOverlap { port, end: pm_end, what });
        }
    }

    let devices = &layout.mmio_devices;
    if devices.len() > MAX_MMIO_DEVICES {
        return Err(AcpiError::TooManyMmioDevices(devices.len()));
    }
    for (index, &(base, len, gsi)) in devices.iter().enumerate() {
        let end = base.checked_add(len);
        if len == 0 || !matches!(end, Some(end) if end <= 1 << 32) {
            return Err(AcpiError::MmioRange { index, base, len });
        }
        if gsi >= IOAPIC_GSI_BASE + IOAPIC_PINS {
            return Err(AcpiError::MmioGsi { index, gsi });
        }
        for (first, &(other_base, other_len, _)) in devices[..index].iter().enumerate() {
            if base < other_base + other_len && other_base < base + len {
                return Err(AcpiError::MmioOverlap { first, second: index });
            }
        }
    }
    Ok(())
}

/// Bump allocator over the ACPI area.
struct Placer {
    next: u64,
}

impl Placer {
    fn new() -> Self {
        Self { next: ACPI_TABLES_START }
    }

    fn place(&mut self, len: u64) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(TABLE_ALIGN);
        let end = addr.saturating_add(len);
        if end > ACPI_TABLES_END {
            return Err(AcpiError::TooLarge {
                needed: end - ACPI_TABLES_START,
                available: ACPI_TABLES_END - ACPI_TABLES_START,
            });
        }
        self.next = end;
        Ok(addr)
    }
}

/// Already-encoded AML, so devices can be built one by one and then put in a scope.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

fn build_dsdt(layout: &AcpiLayout) -> Vec<u8> {
    let mut body = Vec::new();
    // \_S5_ = { SLP_TYPa, SLP_TYPb }: what Linux writes to the sleep control register.
    Name::new(Path::new("_S5_"), &Package::new(vec![&S5_SLP_TYP, &0u8])).to_aml_bytes(&mut body);

    let mut devices = Vec::new();
    if layout.serial {
        devices.push(RawAml(com1_aml()));
    }
    devices.push(RawAml(i8042_aml()));
    for (index, &(base, len, gsi)) in layout.mmio_devices.iter().enumerate() {
        devices.push(RawAml(virtio_mmio_aml(index, base, len, gsi)));
    }
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(*b"DSDT", 36, DSDT_REVISION, OEM_ID, *b"SHIMDSDT", OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// 16550 UART (`PNP0501`) at COM1 with its edge-triggered, active-high IRQ.
fn com1_aml() -> Vec<u8> {
    let io = IO::new(COM1_PORT, COM1_PORT, 1, COM1_PORT_LEN);
    let irq = Interrupt::new(true, true, false, false, COM1_GSI);
    let crs = ResourceTemplate::new(vec![&io, &irq]);
    aml_bytes(&Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    ))
}

/// i8042 keyboard controller (`PNP0303`): data and command ports, IRQ 1. No AUX
/// (mouse) device, so Linux does not probe for one.
fn i8042_aml() -> Vec<u8> {
    let data = IO::new(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1);
    let command = IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let irq = Interrupt::new(true, true, false, false, I8042_KBD_GSI);
    let crs = ResourceTemplate::new(vec![&data, &command, &irq]);
    aml_bytes(&Device::new(
        Path::new("PS2K"),
        vec![&Name::new(Path::new("_HID"), &EISAName::new("PNP0303")), &Name::new(Path::new("_CRS"), &crs)],
    ))
}

/// One virtio-mmio transport: its window and its edge-triggered GSI (irqfd).
/// `validate` guarantees the window is below 4 GiB and `index` < 256.
fn virtio_mmio_aml(index: usize, base: u64, len: u64, gsi: u32) -> Vec<u8> {
    let name = format!("V{index:03}");
    let uid = index as u32;
    let window = Memory32Fixed::new(true, base as u32, len as u32);
    let irq = Interrupt::new(true, true, false, false, gsi);
    let crs = ResourceTemplate::new(vec![&window, &irq]);
    aml_bytes(&Device::new(
        Path::new(&name),
        vec![
            &Name::new(Path::new("_HID"), &VIRTIO_MMIO_HID),
            &Name::new(Path::new("_UID"), &uid),
            // Cache-coherent DMA: guest RAM is ordinary host memory.
            &Name::new(Path::new("_CCA"), &ONE),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    ))
}

fn pm_gas(address: u64) -> GAS {
    GAS::new(AddressSpace::SystemIo, PM_REG_BIT_WIDTH, 0, AccessSize::ByteAccess, address)
}

fn build_fadt(pm_port: u16, dsdt_addr: u64) -> Vec<u8> {
    let port = u64::from(pm_port);
    let mut fadt = FADTBuilder::new(OEM_ID, *b"SHIMFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        // No fixed-feature power/sleep buttons.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        // The reset register: Linux writes RESET_VALUE there with `reboot=a` (and
        // ACPI comes first in its default reboot order).
        .flag(Flags::ResetRegSup)
        .preferred_pm_profile(PmProfile::Unspecified);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.sleep_control_reg = pm_gas(port + SLEEP_CONTROL_OFFSET);
    fadt.sleep_status_reg = pm_gas(port + SLEEP_STATUS_OFFSET);
    fadt.reset_reg = pm_gas(port + RESET_REG_OFFSET);
    fadt.reset_value = RESET_VALUE;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&fadt.finalize())
}

fn build_madt(num_cpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(*b"APIC", MADT_HEADER_LEN, MADT_REVISION, OEM_ID, *b"SHIMAPIC", OEM_REVISION);
    madt.write_u32(MADT_LAPIC_ADDR_OFFSET, LAPIC_ADDR);
    madt.write_u32(MADT_FLAGS_OFFSET, MADT_FLAGS);
    for cpu in 0..num_cpus {
        madt.append_slice(&aml_bytes(&ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled)));
    }
    madt.append_slice(&aml_bytes(&IoApic::new(IOAPIC_ID, IOAPIC_ADDR, IOAPIC_GSI_BASE)));
    let [flags_lo, flags_hi] = MPS_INTI_FLAGS_CONFORMS.to_le_bytes();
    madt.append_slice(&[
        MADT_TYPE_LAPIC_NMI,
        MADT_LAPIC_NMI_LEN,
        ACPI_ALL_PROCESSORS,
        flags_lo,
        flags_hi,
        LAPIC_NMI_LINT,
    ]);
    madt.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 * MIB)]).unwrap()
    }

    fn layout() -> AcpiLayout {
        AcpiLayout {
            num_cpus: 4,
            pm_port: 0x600,
            mmio_devices: vec![(0xd000_0000, 0x1000, 5), (0xd000_1000, 0x1000, 6)],
            serial: true,
        }
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
    }
    fn contains(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    /// Reads a table with a standard 36-byte header back from guest memory and
    /// checks its signature, length sanity, placement and checksum.
    fn read_table(mem: &GuestMemoryMmap<()>, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
        assert!((ACPI_TABLES_START..ACPI_TABLES_END).contains(&addr), "{addr:#x}");
        assert_eq!(addr % TABLE_ALIGN, 0);
        let mut hdr = [0u8; 36];
        mem.read_slice(&mut hdr, GuestAddress(addr)).unwrap();
        assert_eq!(&hdr[0..4], sig);
        let len = u32_at(&hdr, 4) as usize;
        assert!(len >= 36);
        assert!(addr + len as u64 <= ACPI_TABLES_END);
        let mut table = vec![0u8; len];
        mem.read_slice(&mut table, GuestAddress(addr)).unwrap();
        assert_eq!(sum(&table), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&table[10..16], &OEM_ID);
        table
    }

    /// Follows RSDP → XSDT and returns (FADT, MADT) addresses after checking both.
    fn walk(mem: &GuestMemoryMmap<()>) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(RSDP_ADDR)).unwrap();
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[0..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
        assert_eq!(rsdp[15], 2, "RSDP revision");
        assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
        let xsdt = read_table(mem, u64_at(&rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 2 * 8, "XSDT lists FADT and MADT");
        let fadt = read_table(mem, u64_at(&xsdt, 36), b"FACP");
        let madt = read_table(mem, u64_at(&xsdt, 44), b"APIC");
        // Offsets from ACPI 6.5 Table 5.9: X_DSDT at 140; DSDT (32-bit) at 40.
        assert_eq!(u32_at(&fadt, 40), 0);
        let dsdt = read_table(mem, u64_at(&fadt, 140), b"DSDT");
        (fadt, madt, dsdt)
    }

    #[test]
    fn tables_parse_back() {
        let mem = mem();
        let rsdp = create_acpi_tables(&mem, &layout()).unwrap();
        assert_eq!(rsdp, GuestAddress(0xE_0000));
        let (fadt, madt, dsdt) = walk(&mem);

        // FADT (ACPI 6.5 Table 5.9 offsets).
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6, "FADT major revision");
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let iapc = u16_at(&fadt, 109);
        assert_ne!(iapc & (1 << 1), 0, "8042 present");
        assert_ne!(iapc & (1 << 2), 0, "VGA not present");
        // GAS: space 1 (I/O), 8 bits, offset 0, byte access, address.
        let gas = |off: usize| (fadt[off], fadt[off + 1], fadt[off + 2], fadt[off + 3], u64_at(&fadt, off + 4));
        assert_eq!(gas(244), (1, 8, 0, 1, 0x600), "sleep control register");
        assert_eq!(gas(256), (1, 8, 0, 1, 0x601), "sleep status register");
        assert_eq!(gas(116), (1, 8, 0, 1, 0x600), "reset register");
        assert_eq!(fadt[128], RESET_VALUE);
        assert_eq!(&fadt[268..276], &HYPERVISOR_VENDOR_ID);

        // MADT: header fields, then walk the structures.
        assert_eq!(u32_at(&madt, 36), 0xFEE0_0000);
        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        let mut nmis = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let (ty, len) = (madt[off], madt[off + 1] as usize);
            assert!(len >= 2 && off + len <= madt.len(), "MADT structure at {off}");
            let s = &madt[off..off + len];
            match ty {
                0 => lapics.push((s[2], s[3], u32_at(s, 4))),
                1 => ioapics.push((s[2], u32_at(s, 4), u32_at(s, 8))),
                4 => nmis.push((s[2], u16_at(s, 3), s[5])),
                other => panic!("unexpected MADT structure type {other}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(lapics, (0..4).map(|i| (i, i, 1)).collect::<Vec<_>>(), "uid, apic id, enabled");
        assert_eq!(ioapics, vec![(0, 0xFEC0_0000, 0)]);
        assert_eq!(nmis, vec![(0xFF, 0, 1)], "all CPUs, LINT1");

        // DSDT: Name(_S5_, Package(2){5, 0}) hand-encoded from the AML grammar:
        // NameOp '_S5_' PackageOp PkgLength=5 NumElements=2 BytePrefix 5 ZeroOp.
        assert_eq!(dsdt[8], DSDT_REVISION);
        assert_eq!(contains(&dsdt, &[0x08, b'_', b'S', b'5', b'_', 0x12, 5, 2, 0x0A, 5, 0x00]), 1);
        assert_eq!(contains(&dsdt, b"\\_SB_"), 1, "one \\_SB_ scope");
        // EISAID("PNP0501") = 0x0105D041, EISAID("PNP0303") = 0x0303D041 (DWordPrefix).
        assert_eq!(contains(&dsdt, &[0x0C, 0x41, 0xD0, 0x05, 0x01]), 1, "COM1");
        assert_eq!(contains(&dsdt, &[0x0C, 0x41, 0xD0, 0x03, 0x03]), 1, "i8042");
        // IO descriptor for COM1: decode16, min 0x3F8, max 0x3F8, align 1, len 8.
        assert_eq!(contains(&dsdt, &[0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08]), 1);
        assert_eq!(contains(&dsdt, b"LNRO0005\0"), 2);
        assert_eq!(contains(&dsdt, b"V000"), 1);
        assert_eq!(contains(&dsdt, b"V001"), 1);
        // Memory32Fixed(rw, 0xd0001000, 0x1000) then Extended IRQ (consumer, edge) GSI 6.
        assert_eq!(
            contains(
                &dsdt,
                &[0x86, 9, 0, 1, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0, 0, 0x89, 6, 0, 0x03, 1, 6, 0, 0, 0]
            ),
            1
        );
    }

    #[test]
    fn optional_devices_are_left_out() {
        let mem = mem();
        let layout = AcpiLayout { num_cpus: 1, pm_port: 0x600, mmio_devices: vec![], serial: false };
        create_acpi_tables(&mem, &layout).unwrap();
        let (_, madt, dsdt) = walk(&mem);
        assert_eq!(madt.len(), 44 + 8 + 12 + 6);
        assert_eq!(contains(&dsdt, b"LNRO0005"), 0);
        assert_eq!(contains(&dsdt, &[0x0C, 0x41, 0xD0, 0x05, 0x01]), 0, "no COM1");
        assert_eq!(contains(&dsdt, &[0x0C, 0x41, 0xD0, 0x03, 0x03]), 1, "i8042 stays");
        assert_eq!(contains(&dsdt, b"_S5_"), 1);
    }

    #[test]
    fn max_cpus_and_devices_fit() {
        let mem = mem();
        let layout = AcpiLayout {
            num_cpus: MAX_CPUS,
            pm_port: 0x600,
            mmio_devices: (0..MAX_MMIO_DEVICES as u64)
                .map(|i| (0xd000_0000 + i * 0x1000, 0x1000, 5 + (i as u32 % 19)))
                .collect(),
            serial: true,
        };
        create_acpi_tables(&mem, &layout).unwrap();
        let (_, madt, dsdt) = walk(&mem);
        assert_eq!(madt.len(), 44 + 8 * MAX_CPUS as usize + 12 + 6);
        assert_eq!(contains(&dsdt, b"LNRO0005\0"), MAX_MMIO_DEVICES);
        assert_eq!(contains(&dsdt, b"V255"), 1);
    }

    #[test]
    fn bad_layouts_are_rejected() {
        let mem = mem();
        let check = |f: &dyn Fn(&mut AcpiLayout), want: &str| {
            let mut l = layout();
            f(&mut l);
            let err = create_acpi_tables(&mem, &l).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        };
        check(&|l| l.num_cpus = 0, "at least one vCPU");
        check(&|l| l.num_cpus = 255, "255 vCPUs");
        check(&|l| l.pm_port = 0xFFFF, "PM port 0xffff");
        check(&|l| l.pm_port = 0x3FF, "COM1");
        check(&|l| l.pm_port = 0x63, "i8042");
        check(&|l| l.mmio_devices[1].2 = 24, "GSI 24");
        check(&|l| l.mmio_devices[0].1 = 0, "device 0");
        check(&|l| l.mmio_devices[1] = (0xffff_f000, 0x2000, 5), "below 4 GiB");
        check(&|l| l.mmio_devices[1] = (u64::MAX, 2, 5), "below 4 GiB");
        check(&|l| l.mmio_devices[1].0 = 0xd000_0800, "overlap");
        check(&|l| l.mmio_devices = vec![(0xd000_0000, 0x10, 5); MAX_MMIO_DEVICES + 1], "257 virtio-mmio");
        // Without serial, the COM1 ports are free for the PM block.
        let l = AcpiLayout { pm_port: 0x3F8, serial: false, ..layout() };
        create_acpi_tables(&mem, &l).unwrap();
    }

    #[test]
    fn memory_must_cover_the_area() {
        // Guest RAM starting at 1 MiB leaves the BIOS area unbacked.
        let high = GuestMemoryMmap::from_ranges(&[(GuestAddress(1 << 20), MIB)]).unwrap();
        let err = create_acpi_tables(&high, &layout()).unwrap_err();
        assert!(matches!(err, AcpiError::NotInGuestMemory { start: 0xE_0000, .. }), "{err}");
        // RAM ending inside the area: nothing may be written at all.
        let short = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0xE_0100)]).unwrap();
        let err = create_acpi_tables(&short, &layout()).unwrap_err();
        assert!(matches!(err, AcpiError::NotInGuestMemory { .. }), "{err}");
        let mut b = [0u8; 8];
        short.read_slice(&mut b, GuestAddress(RSDP_ADDR)).unwrap();
        assert_eq!(b, [0; 8], "no partial RSDP");
    }

    #[test]
    fn agrees_with_the_vmm_layout() {
        // The VMM's own port, window and GSI choices pass validation (the e820 and
        // PM port length agreements are compile-time assertions above).
        let l = AcpiLayout {
            num_cpus: 2,
            pm_port: layout::ACPI_PM_PORT,
            mmio_devices: (0..=(layout::VIRTIO_IRQ_MAX - layout::VIRTIO_IRQ_BASE))
                .map(|i| {
                    let base = layout::VIRTIO_MMIO_START + u64::from(i) * layout::MMIO_DEVICE_STRIDE;
                    (base, layout::MMIO_DEVICE_STRIDE, layout::VIRTIO_IRQ_BASE + i)
                })
                .collect(),
            serial: true,
        };
        create_acpi_tables(&mem(), &l).unwrap();
    }

    #[test]
    fn placer_aligns_and_bounds() {
        let mut p = Placer::new();
        assert_eq!(p.place(36).unwrap(), 0xE_0000);
        assert_eq!(p.place(1).unwrap(), 0xE_0030);
        assert_eq!(p.place(3).unwrap(), 0xE_0040);
        let err = p.place(ACPI_TABLES_END - ACPI_TABLES_START).unwrap_err();
        assert!(matches!(err, AcpiError::TooLarge { available: 0x2_0000, .. }), "{err}");
        assert!(p.place(u64::MAX).is_err());
    }
}
