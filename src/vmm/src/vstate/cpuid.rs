//! CPUID for a vCPU: KVM's supported list, with the topology of this VM
//! (APIC ids, logical processor counts) and the hypervisor bit.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1: EBX[31:24] initial APIC id, EBX[23:16] logical processors per package,
/// EBX[15:8] CLFLUSH line size in quadwords.
const LEAF_FEATURES: u32 = 0x1;
const EBX_APIC_ID_SHIFT: u32 = 24;
const EBX_CPU_COUNT_SHIFT: u32 = 16;
const EBX_CLFLUSH_SHIFT: u32 = 8;
const CLFLUSH_LINE_QWORDS: u32 = 8;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// Leaf 4 (Intel deterministic cache parameters): EAX[31:26] cores per package - 1.
const LEAF_CACHE_PARAMS: u32 = 0x4;
const EAX_CORES_SHIFT: u32 = 26;
/// Leaf 0xB / 0x1F (extended topology).
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;
const ECX_LEVEL_TYPE_SHIFT: u32 = 8;
/// Leaf 0x8000_0001 ECX bit 1: CmpLegacy (AMD multi-core).
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const ECX_CMP_LEGACY: u32 = 1 << 1;
/// Leaf 0x8000_0008 ECX[7:0]: number of cores - 1; ECX[15:12]: APIC id bits
/// that number a core within the package (AMD).
const LEAF_ADDR_SIZES: u32 = 0x8000_0008;
const ECX_NC_MASK: u32 = 0xff;
const ECX_CORE_ID_SIZE_SHIFT: u32 = 12;
const ECX_CORE_ID_SIZE_MASK: u32 = 0xf << ECX_CORE_ID_SIZE_SHIFT;
/// Leaf 0x8000_001E (AMD topology extension): EAX extended APIC id.
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

/// Bits needed to number `n` things (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Adjusts KVM's supported CPUID for vCPU `cpu_id` of a VM with `nvcpus`
/// single-threaded cores in one socket.
pub fn normalize(cpuid: &mut CpuId, cpu_id: u8, nvcpus: u8) {
    let apic_id = u32::from(cpu_id);
    let n = u32::from(nvcpus);
    let core_bits = bits_for(n);
    add_missing_core_levels(cpuid);
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (apic_id << EBX_APIC_ID_SHIFT)
                    | (n << EBX_CPU_COUNT_SHIFT)
                    | (CLFLUSH_LINE_QWORDS << EBX_CLFLUSH_SHIFT);
                e.ecx |= ECX_HYPERVISOR;
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                e.eax &= !(0x3f << EAX_CORES_SHIFT);
                e.eax |= (n - 1) << EAX_CORES_SHIFT;
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => topology_level(e, apic_id, n, core_bits),
            LEAF_EXT_FEATURES => {
                if n > 1 {
                    e.ecx |= ECX_CMP_LEGACY;
                } else {
                    e.ecx &= !ECX_CMP_LEGACY;
                }
            }
            LEAF_ADDR_SIZES => {
                // NC (cores - 1) and ApicIdCoreIdSize (APIC id bits per package).
                e.ecx =
                    (e.ecx & !(ECX_NC_MASK | ECX_CORE_ID_SIZE_MASK)) | (n - 1) | (core_bits << ECX_CORE_ID_SIZE_SHIFT);
            }
            LEAF_AMD_TOPOLOGY => {
                e.eax = apic_id;
                e.ebx = apic_id; // compute unit id = core, one thread per unit
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

/// KVM on AMD hosts lists leaf 0xb with its SMT subleaf only. A guest reading
/// that sees one thread per package, i.e. every vCPU a socket of its own (and
/// then marks the TSC unsynchronized, as it assumes for multi-socket AMD).
/// Adds the core subleaf wherever a topology leaf lacks it.
fn add_missing_core_levels(cpuid: &mut CpuId) {
    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
        let has = |i: u32| cpuid.as_slice().iter().any(|e| e.function == leaf && e.index == i);
        if has(0) && !has(1) {
            let core = kvm_cpuid_entry2 {
                function: leaf,
                index: 1,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            };
            if cpuid.push(core).is_err() {
                log::warn!("CPUID: no room for leaf {leaf:#x}.1; the guest may see one socket per vCPU");
            }
        }
    }
}

fn topology_level(e: &mut kvm_cpuid_entry2, apic_id: u32, n: u32, core_bits: u32) {
    e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e.edx = apic_id;
    match e.index {
        0 => {
            e.eax = 0;
            e.ebx = 1;
            e.ecx = (LEVEL_TYPE_SMT << ECX_LEVEL_TYPE_SHIFT) | e.index;
        }
        1 => {
            e.eax = core_bits;
            e.ebx = n;
            e.ecx = (LEVEL_TYPE_CORE << ECX_LEVEL_TYPE_SHIFT) | e.index;
        }
        _ => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = e.index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, ..Default::default() }
    }

    #[test]
    fn bits() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
    }

    #[test]
    fn a_topology_leaf_without_its_core_level_gets_one() {
        // What KVM_GET_SUPPORTED_CPUID gives on an AMD host: 0xb.0 only.
        let mut c = CpuId::from_entries(&[entry(0xb, 0), entry(0x8000_0008, 0)]).unwrap();
        c.as_mut_slice()[1].ecx = 0x7001; // the host's 128-thread package
        normalize(&mut c, 0, 2);
        let s = c.as_slice();
        let core = s.iter().find(|e| e.function == 0xb && e.index == 1).expect("core level added");
        assert_eq!(core.ecx >> ECX_LEVEL_TYPE_SHIFT, LEVEL_TYPE_CORE);
        assert_eq!((core.eax, core.ebx), (1, 2), "shift 1, two logical CPUs in the package");
        assert_ne!(core.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
        let addr = s.iter().find(|e| e.function == 0x8000_0008).unwrap();
        assert_eq!(addr.ecx & ECX_NC_MASK, 1);
        assert_eq!((addr.ecx & ECX_CORE_ID_SIZE_MASK) >> ECX_CORE_ID_SIZE_SHIFT, 1);
        // Leaf 0x1f is not invented where KVM has none.
        assert!(!s.iter().any(|e| e.function == 0x1f));
    }

    #[test]
    fn topology_for_cpu_one_of_two() {
        let mut c = CpuId::from_entries(&[entry(1, 0), entry(0xb, 0), entry(0xb, 1), entry(0x8000_0008, 0)]).unwrap();
        normalize(&mut c, 1, 2);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, 1, "APIC id");
        assert_eq!((s[0].ebx >> 16) & 0xff, 2, "logical count");
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(s[0].edx & EDX_HTT, 0);
        assert_eq!((s[1].ebx, s[1].edx), (1, 1));
        assert_eq!((s[2].eax, s[2].ebx), (1, 2));
        assert_eq!(s[2].ecx >> 8, LEVEL_TYPE_CORE);
        assert_eq!(s[3].ecx & 0xff, 1);
    }
}
