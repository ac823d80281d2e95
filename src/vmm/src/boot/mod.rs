//! Direct 64-bit Linux boot: kernel/initrd loading (`loader`), the zero page
//! and e820 map (`params`), ACPI tables (`acpi`).

pub mod acpi;
pub mod loader;
pub mod params;
