//! KVM state: the VM (`vm`), its vCPUs (`vcpu`), their CPUID (`cpuid`) and
//! initial registers (`regs`).

pub mod cpuid;
pub mod regs;
pub mod vcpu;
pub mod vm;
