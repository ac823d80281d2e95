//! Physical NICs owned through VFIO and driven from user space.
