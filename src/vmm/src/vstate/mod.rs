//! KVM state: the VM (`vm`), its vCPUs (`vcpu`), their CPUID (`cpuid`) and
//! initial registers (`regs`), and KVM's coalesced I/O ring (`coalesced`).

pub mod coalesced;
pub mod cpuid;
pub mod regs;
pub mod vcpu;
pub mod vm;
