//! Direct 64-bit Linux boot: kernel/initrd loading, boot parameters, ACPI.

pub mod acpi;
