//! Legacy PC devices: 16550 serial, i8042, ACPI power management.

pub mod acpi_pm;
