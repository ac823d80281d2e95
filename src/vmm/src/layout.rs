//! Guest-physical memory map of an x86_64 shimvmm guest.
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA (RAM, unused by a direct boot)
//! 0x0000_0500  GDT, IDT, boot page tables, zero page, command line (RAM)
//! 0x0009_fc00  EBDA .. 0x000f_ffff  BIOS area, ACPI tables at 0xE0000 (reserved)
//! 0x0010_0000  kernel (RAM continues up to min(mem, MMIO_GAP_START))
//! 0xc000_0000  MMIO gap: virtio-mmio devices at 0xd000_0000, IOAPIC, LAPIC
//! 0x1_0000_0000 RAM above 4 GiB when the guest has more than 3 GiB
//! ```

/// Where the boot GDT lives.
pub const BOOT_GDT_START: u64 = 0x500;
/// Where the (empty) boot IDT lives.
pub const BOOT_IDT_START: u64 = 0x520;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT, PD (1 GiB of 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line; its maximum length including the NUL.
pub const CMDLINE_START: u64 = 0x2_0000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the EBDA: RAM below it is usable, from it to 1 MiB is reserved.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where high memory (and the kernel) begins.
pub const HIMEM_START: u64 = 0x10_0000;
/// ACPI tables area (RSDP must be in 0xE0000..0xFFFFF to be found by a scan).
pub const ACPI_START: u64 = 0xe_0000;

/// The 32-bit MMIO hole below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window; each takes `MMIO_DEVICE_STRIDE`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const MMIO_DEVICE_STRIDE: u64 = 0x1000;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's TSS (three pages) and identity-map page, inside the MMIO gap.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Legacy IRQs: COM1 on 4, the i8042 keyboard on 1.
pub const SERIAL_IRQ: u32 = 4;
pub const I8042_KBD_IRQ: u32 = 1;
/// GSIs handed to virtio-mmio devices, in order (the IOAPIC has 24 pins).
pub const VIRTIO_IRQ_BASE: u32 = 5;
pub const VIRTIO_IRQ_MAX: u32 = 23;

/// I/O ports.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM_PORT_LEN: u16 = 8;
pub const I8042_PORT: u16 = 0x60;
pub const I8042_PORT_LEN: u16 = 5;
/// ACPI sleep control/status registers (hardware-reduced ACPI).
pub const ACPI_PM_PORT: u16 = 0x600;
pub const ACPI_PM_PORT_LEN: u16 = 2;
