//! Initial vCPU state for a direct 64-bit Linux boot: flat GDT, identity-mapped
//! page tables for the first GiB, long mode on, boot_params in RSI.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::*;
use crate::memory::GuestMemory;

// Control register and EFER bits.
const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;
// Page-table entry bits.
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PDE_HUGE: u64 = 1 << 7;
const ENTRIES_PER_TABLE: u64 = 512;
const HUGE_PAGE_SIZE: u64 = 2 << 20;

/// GDT entries: null, 64-bit code, data, TSS (selectors 0x8, 0x10, 0x18).
const GDT_CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
const GDT_DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
const GDT_TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);
const GDT_TABLE: [u64; 4] = [0, GDT_CODE64, GDT_DATA, GDT_TSS];
const CODE_SELECTOR: u16 = 1;
const DATA_SELECTOR: u16 = 2;
const TSS_SELECTOR: u16 = 3;

// x87/SSE reset values.
const FPU_CONTROL_WORD: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write boot GDT/IDT/page tables into guest memory: {0}")]
    WriteBootTables(vm_memory::GuestMemoryError),
}

/// A GDT descriptor from flags, base and limit (Intel SDM 3A 3.4.5).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn segment_from_gdt(entry: u64, table_index: u16) -> kvm_segment {
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: {
            let l = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
            // 4 KiB granularity: the limit counts pages.
            if (entry >> 55) & 1 == 1 {
                (l << 12) | 0xfff
            } else {
                l
            }
        },
        selector: table_index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Writes the GDT, IDT and page tables into guest memory (once per VM).
pub fn write_boot_tables(mem: &GuestMemory) -> Result<(), RegsError> {
    for (i, e) in GDT_TABLE.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + (i as u64) * 8)).map_err(RegsError::WriteBootTables)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START)).map_err(RegsError::WriteBootTables)?;
    mem.write_obj(PDPTE_START | PTE_PRESENT | PTE_WRITABLE, GuestAddress(PML4_START))
        .map_err(RegsError::WriteBootTables)?;
    mem.write_obj(PDE_START | PTE_PRESENT | PTE_WRITABLE, GuestAddress(PDPTE_START))
        .map_err(RegsError::WriteBootTables)?;
    for i in 0..ENTRIES_PER_TABLE {
        mem.write_obj((i * HUGE_PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE | PDE_HUGE, GuestAddress(PDE_START + i * 8))
            .map_err(RegsError::WriteBootTables)?;
    }
    Ok(())
}

/// Special registers for 64-bit mode with the boot tables above.
pub fn boot_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_gdt(GDT_CODE64, CODE_SELECTOR);
    let data = segment_from_gdt(GDT_DATA, DATA_SELECTOR);
    let tss = segment_from_gdt(GDT_TSS, TSS_SELECTOR);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT_TABLE) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers: enter the kernel at `entry` with boot_params in RSI.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: FPU_CONTROL_WORD, mxcsr: MXCSR_DEFAULT, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode() {
        let code = segment_from_gdt(GDT_CODE64, CODE_SELECTOR);
        assert_eq!((code.l, code.db, code.present, code.s, code.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.selector, 0x8);
        let data = segment_from_gdt(GDT_DATA, DATA_SELECTOR);
        assert_eq!((data.l, data.db, data.type_), (0, 1, 3));
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPTE_START);
        let pde_last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(pde_last & !0xfff, 511 * HUGE_PAGE_SIZE);
        assert_ne!(pde_last & PDE_HUGE, 0);
        let s = boot_sregs(kvm_sregs::default());
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
    }
}
