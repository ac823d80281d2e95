//! What the Intel e1000-family drivers ([`crate::igb`], [`crate::e1000e`])
//! share: the common registers and the descriptor rings. A new family is one
//! new module with its own `regs` (re-exporting [`regs`]) and a
//! [`ring::DescLayout`]; it does not copy the ring bookkeeping.

pub mod regs;
