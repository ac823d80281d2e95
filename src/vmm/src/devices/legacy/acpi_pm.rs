//! ACPI PM device (being written).
