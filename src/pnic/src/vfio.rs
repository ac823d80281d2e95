//! Owning a PCI NIC through VFIO (type1v2 IOMMU, legacy container + group).
//!
//! Everything that can be wrong with the host setup is checked *before* any
//! VFIO ioctl, against sysfs, so the user gets one line saying what to fix.
//! Guest RAM is mapped once with IOVA = guest-physical address; the VMM's own
//! DMA areas (rings, bounce buffers) are mapped above guest RAM.

use std::collections::HashMap;
use std::fs;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioContainer, VfioDevice};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_config::PnicDma;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::bdf::Bdf;
use crate::dma::{DmaMapper, PAGE_SIZE};
use crate::driver::RegisterAccess;
use vmm_config::sync::lock_unpoisoned as lock;

/// PCI config space: command register and its bits.
pub const PCI_COMMAND: u64 = 0x04;
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// PCI config space: BAR0 and its "I/O space" bit.
pub const PCI_BAR0: u64 = 0x10;
pub const PCI_BAR_IO_SPACE: u32 = 1 << 0;

/// Intel's PCI vendor id.
pub const VENDOR_INTEL: u16 = 0x8086;

/// PCI device ids of the NICs with a driver.
pub const DEVICE_82576: u16 = 0x10c9;
pub const DEVICE_82574L: u16 = 0x10d3;
/// The 82576's SR-IOV virtual function (igbvf).
pub const DEVICE_82576_VF: u16 = 0x10ca;

/// NICs shimvmm has a driver for: (vendor, device, name).
pub const SUPPORTED_NICS: &[(u16, u16, &str)] = &[
    (VENDOR_INTEL, DEVICE_82576, "Intel 82576 (igb)"),
    (VENDOR_INTEL, DEVICE_82574L, "Intel 82574L (e1000e)"),
    (VENDOR_INTEL, DEVICE_82576_VF, "Intel 82576 virtual function (igbvf)"),
];

/// Drivers that may own other functions of a viable IOMMU group.
const GROUP_OK_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("PCI device {0} not found in /sys/bus/pci/devices; list NICs with `lspci -D -nn | grep -i ether`")]
    NotFound(Bdf),
    #[error("PCI device {bdf} is bound to driver '{driver}', not vfio-pci; bind it: echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > /sys/bus/pci/devices/{bdf}/driver/unbind; echo {bdf} > /sys/bus/pci/drivers_probe (modprobe vfio-pci first)")]
    NotBoundToVfio { bdf: Bdf, driver: String },
    #[error("no usable IOMMU: {0}; enable it on the kernel command line (intel_iommu=on or amd_iommu=on, iommu=pt) and modprobe vfio-pci vfio_iommu_type1")]
    NoIommu(String),
    #[error("IOMMU group {group} of {bdf} is not viable: {others} must also be bound to vfio-pci (or unbound)")]
    GroupNotViable { bdf: Bdf, group: u32, others: String },
    #[error("PCI device {bdf} is {vendor:04x}:{device:04x}, which shimvmm has no driver for; supported: {supported}")]
    Unsupported { bdf: Bdf, vendor: u16, device: u16, supported: String },
    #[error("PCI device {1}: {0}")]
    Bar0(&'static str, Bdf),
    #[error("cannot read {path}: {source}")]
    Sysfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VFIO {what} failed for {bdf}: {source}")]
    Vfio {
        bdf: Bdf,
        what: &'static str,
        #[source]
        source: vfio_ioctls::VfioError,
    },
    #[error("mapping guest RAM for DMA failed: {0}; VFIO pins all guest RAM: run as root or raise the locked-memory limit (ulimit -l) above the guest RAM size")]
    DmaMap(String),
    #[error("PCI config space access failed for {bdf}: {source}")]
    Config {
        bdf: Bdf,
        #[source]
        source: std::io::Error,
    },
    #[error("mmap of BAR0 of {bdf} failed: {source}")]
    Mmap {
        bdf: Bdf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating an eventfd for MSI-X failed: {0}")]
    EventFd(#[source] std::io::Error),
}

/// What sysfs says about a device that passed every pre-boot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsInfo {
    pub vendor: u16,
    pub device: u16,
    pub group: u32,
    pub sysfs_path: PathBuf,
}

/// Where to look for sysfs and /dev (overridable so the checks are testable).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths { sys: PathBuf::from("/sys"), dev: PathBuf::from("/dev") }
    }
}

fn read_hex_id(path: &Path) -> Result<u16, VfioError> {
    let s = fs::read_to_string(path).map_err(|source| VfioError::Sysfs { path: path.to_path_buf(), source })?;
    let s = s.trim().trim_start_matches("0x");
    u16::from_str_radix(s, 16).map_err(|_| VfioError::Sysfs {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a hex id"),
    })
}

fn driver_of(dev_path: &Path) -> Option<String> {
    fs::read_link(dev_path.join("driver")).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn supported_list() -> String {
    SUPPORTED_NICS.iter().map(|(v, d, n)| format!("{v:04x}:{d:04x} {n}")).collect::<Vec<_>>().join(", ")
}

/// All pre-boot checks, in the order a user would fix them.
pub fn precheck(paths: &HostPaths, bdf: Bdf) -> Result<SysfsInfo, VfioError> {
    let dev_path = paths.sys.join("bus/pci/devices").join(bdf.to_string());
    if !dev_path.exists() {
        return Err(VfioError::NotFound(bdf));
    }
    let vendor = read_hex_id(&dev_path.join("vendor"))?;
    let device = read_hex_id(&dev_path.join("device"))?;
    if !SUPPORTED_NICS.iter().any(|(v, d, _)| *v == vendor && *d == device) {
        return Err(VfioError::Unsupported { bdf, vendor, device, supported: supported_list() });
    }
    if !paths.dev.join("vfio/vfio").exists() {
        return Err(VfioError::NoIommu(format!(
            "{} is missing (vfio module not loaded?)",
            paths.dev.join("vfio/vfio").display()
        )));
    }
    let groups_dir = paths.sys.join("kernel/iommu_groups");
    let has_groups = fs::read_dir(&groups_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if !has_groups {
        return Err(VfioError::NoIommu(format!("{} is empty: the kernel found no IOMMU", groups_dir.display())));
    }
    let group = fs::read_link(dev_path.join("iommu_group"))
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()?.parse::<u32>().ok()))
        .ok_or_else(|| VfioError::NoIommu(format!("{bdf} has no iommu_group")))?;
    match driver_of(&dev_path) {
        Some(d) if d == "vfio-pci" => {}
        other => return Err(VfioError::NotBoundToVfio { bdf, driver: other.unwrap_or_else(|| "none".into()) }),
    }
    let mut bad = Vec::new();
    let members = groups_dir.join(group.to_string()).join("devices");
    if let Ok(entries) = fs::read_dir(&members) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == bdf.to_string() {
                continue;
            }
            let p = paths.sys.join("bus/pci/devices").join(&name);
            if let Some(d) = driver_of(&p) {
                if !GROUP_OK_DRIVERS.contains(&d.as_str()) {
                    bad.push(format!("{name} (bound to {d})"));
                }
            }
        }
    }
    if !bad.is_empty() {
        bad.sort();
        return Err(VfioError::GroupNotViable { bdf, group, others: bad.join(", ") });
    }
    Ok(SysfsInfo { vendor, device, group, sysfs_path: dev_path })
}

/// BAR0 mapped into our address space; shared by the NIC handle and the
/// register accessor so it outlives every register access.
struct BarMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain MMIO memory; every access goes through
// volatile reads/writes of aligned u32 and the pointer is never re-seated.
unsafe impl Send for BarMap {}
// SAFETY: as above; concurrent volatile MMIO accesses are what the device sees
// from any CPU anyway, and the driver serialises its own sequences.
unsafe impl Sync for BarMap {}

impl Drop for BarMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned and nothing uses the
        // mapping after the last Arc<BarMap> is gone.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Volatile MMIO register access on BAR0.
#[derive(Clone)]
pub struct MmioRegs {
    bar: Arc<BarMap>,
}

impl MmioRegs {
    fn in_bounds(&self, offset: u32) -> bool {
        offset & 3 == 0 && (offset as usize).checked_add(4).is_some_and(|e| e <= self.bar.len)
    }
}

impl RegisterAccess for MmioRegs {
    fn read32(&self, offset: u32) -> u32 {
        if !self.in_bounds(offset) {
            log::error!("BAR0 read at {offset:#x} outside the {}-byte BAR", self.bar.len);
            return u32::MAX;
        }
        // SAFETY: offset is 4-aligned and offset+4 <= len of a live mapping
        // of BAR0 (kept alive by the Arc); MMIO needs volatile access.
        unsafe { std::ptr::read_volatile(self.bar.ptr.add(offset as usize) as *const u32) }
    }

    fn write32(&self, offset: u32, value: u32) {
        if !self.in_bounds(offset) {
            log::error!("BAR0 write at {offset:#x} outside the {}-byte BAR", self.bar.len);
            return;
        }
        // SAFETY: as in read32.
        unsafe { std::ptr::write_volatile(self.bar.ptr.add(offset as usize) as *mut u32, value) }
    }
}

/// VFIO type1 DMA mapper. Keeps a clone of every mapped memory object (and
/// of the guest memory behind every mapped page) so the host pages cannot be
/// unmapped while the IOMMU still points at them.
pub struct VfioDma {
    container: Arc<VfioContainer>,
    mapped: Mutex<Vec<GuestMemoryMmap>>,
    /// Single pages mapped by `map_page` (strict DMA), by IOVA.
    pages: Mutex<HashMap<u64, GuestMemoryMmap>>,
}

impl VfioDma {
    fn unmap_all(&self) {
        let mut m = lock(&self.mapped);
        for mem in m.drain(..) {
            for r in mem.iter() {
                if let Err(e) = self.container.vfio_dma_unmap(r.start_addr().raw_value(), r.len() as usize) {
                    log::error!("VFIO unmap of {:#x} failed: {e}", r.start_addr().raw_value());
                }
            }
        }
        for (iova, _) in lock(&self.pages).drain() {
            if let Err(e) = self.container.vfio_dma_unmap(iova, PAGE_SIZE as usize) {
                log::error!("VFIO unmap of page {iova:#x} failed: {e}");
            }
        }
    }
}

impl DmaMapper for VfioDma {
    fn map(&self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let mut done: Vec<(u64, usize)> = Vec::new();
        for r in mem.iter() {
            let host =
                r.get_host_address(MemoryRegionAddress(0)).map_err(|e| format!("no host address for region: {e}"))?;
            let iova = r.start_addr().raw_value();
            let len = r.len() as usize;
            // SAFETY: host..host+len is a live mmap owned by `mem`'s region;
            // we keep a clone of `mem` in `self.mapped` until the range is
            // unmapped again, so the pages stay valid for the NIC. The VMM
            // only touches this memory through volatile guest-memory accessors.
            let res = unsafe { self.container.vfio_dma_map(iova, len, host) };
            if let Err(e) = res {
                for (i, l) in done {
                    let _ = self.container.vfio_dma_unmap(i, l);
                }
                return Err(format!("VFIO_IOMMU_MAP_DMA iova {iova:#x} len {len:#x}: {e}"));
            }
            done.push((iova, len));
        }
        lock(&self.mapped).push(mem.clone());
        Ok(())
    }

    fn map_page(&self, guest: &GuestMemoryMmap, gpa: u64) -> Result<(), String> {
        if !gpa.is_multiple_of(PAGE_SIZE) {
            return Err(format!("page {gpa:#x} is not page-aligned"));
        }
        let mut pages = lock(&self.pages);
        if pages.contains_key(&gpa) {
            return Err(format!("page {gpa:#x} is mapped already"));
        }
        let host = guest
            .get_slice(GuestAddress(gpa), PAGE_SIZE as usize)
            .map_err(|e| format!("page {gpa:#x} is not guest RAM: {e}"))?
            .ptr_guard_mut()
            .as_ptr();
        // SAFETY: host..host+PAGE_SIZE lies inside one live mmap of `guest`
        // (get_slice checked the whole range); a clone of `guest` is kept in
        // `self.pages` until the page is unmapped, so the mapping outlives
        // the IOMMU entry.
        unsafe { self.container.vfio_dma_map(gpa, PAGE_SIZE as usize, host) }
            .map_err(|e| format!("VFIO_IOMMU_MAP_DMA page {gpa:#x}: {e}"))?;
        pages.insert(gpa, guest.clone());
        Ok(())
    }

    fn unmap_page(&self, gpa: u64) -> Result<(), String> {
        let mut pages = lock(&self.pages);
        if pages.remove(&gpa).is_none() {
            return Err(format!("page {gpa:#x} is not mapped"));
        }
        self.container.vfio_dma_unmap(gpa, PAGE_SIZE as usize).map_err(|e| format!("VFIO unmap of page {gpa:#x}: {e}"))
    }

    fn unmap(&self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let mut m = lock(&self.mapped);
        let key: Vec<u64> = mem.iter().map(|r| r.start_addr().raw_value()).collect();
        if let Some(pos) = m.iter().position(|x| x.iter().map(|r| r.start_addr().raw_value()).eq(key.iter().copied())) {
            let x = m.remove(pos);
            for r in x.iter() {
                self.container
                    .vfio_dma_unmap(r.start_addr().raw_value(), r.len() as usize)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// A NIC owned through VFIO: config space, BAR0, DMA mappings, MSI-X.
pub struct VfioNic {
    bdf: Bdf,
    info: SysfsInfo,
    // Field order matters for drop (Drop of VfioNic stops DMA first): MSI-X
    // fds; BAR0's mapping, which holds the device file open, so it must go
    // before the device or VFIO can't detach the group from its container
    // (EBUSY); the device; then the DMA mappings.
    irq_fds: Vec<EventFd>,
    bar: Arc<BarMap>,
    device: VfioDevice,
    dma: Arc<VfioDma>,
}

impl VfioNic {
    /// Open `bdf`, map all of `guest` for DMA (IOVA = GPA) unless `dma` is
    /// strict (then guest pages are mapped one by one, by `shim::strict`),
    /// mmap BAR0 and enable bus mastering. Fails with a one-line reason
    /// before touching the device if the host setup is wrong.
    pub fn open(bdf: Bdf, guest: &GuestMemoryMmap, dma: PnicDma) -> Result<Self, VfioError> {
        Self::open_with(&HostPaths::default(), bdf, guest, dma)
    }

    pub fn open_with(paths: &HostPaths, bdf: Bdf, guest: &GuestMemoryMmap, dma: PnicDma) -> Result<Self, VfioError> {
        let info = precheck(paths, bdf)?;
        let vf = |what| move |source| VfioError::Vfio { bdf, what, source };
        let container = Arc::new(VfioContainer::new(None).map_err(vf("container open"))?);
        let device = VfioDevice::new(&info.sysfs_path, container.clone(), false).map_err(|e| match e {
            vfio_ioctls::VfioError::GroupViable => VfioError::GroupNotViable {
                bdf,
                group: info.group,
                others: "another device of the group (kernel says not viable)".into(),
            },
            source => VfioError::Vfio { bdf, what: "device open", source },
        })?;
        let bar = Self::map_bar0(bdf, &device)?;
        let mapper = Arc::new(VfioDma { container, mapped: Mutex::new(Vec::new()), pages: Mutex::new(HashMap::new()) });
        let nic = VfioNic { bdf, info, irq_fds: Vec::new(), device, dma: mapper, bar };
        if dma == PnicDma::Ram {
            nic.dma.map(guest).map_err(VfioError::DmaMap)?;
        }
        nic.set_bus_master(true)?;
        Ok(nic)
    }

    fn map_bar0(bdf: Bdf, device: &VfioDevice) -> Result<Arc<BarMap>, VfioError> {
        let mut bar = [0u8; 4];
        Self::config_read_raw(device, PCI_BAR0, &mut bar).map_err(|source| VfioError::Config { bdf, source })?;
        if u32::from_le_bytes(bar) & PCI_BAR_IO_SPACE != 0 {
            return Err(VfioError::Bar0("BAR0 is an I/O port BAR, not memory", bdf));
        }
        let flags = device.get_region_flags(VFIO_PCI_BAR0_REGION_INDEX);
        let size = device.get_region_size(VFIO_PCI_BAR0_REGION_INDEX);
        if size == 0 {
            return Err(VfioError::Bar0("BAR0 is missing (size 0)", bdf));
        }
        let need = VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        if flags & need != need {
            return Err(VfioError::Bar0("BAR0 cannot be mmapped read/write through VFIO", bdf));
        }
        let offset = device.get_region_offset(VFIO_PCI_BAR0_REGION_INDEX);
        // SAFETY: mapping a fresh range (addr NULL) of the device fd at the
        // offset VFIO gave for BAR0; the result is checked before use and
        // owned by BarMap, which unmaps it exactly once.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                device.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VfioError::Mmap { bdf, source: std::io::Error::last_os_error() });
        }
        Ok(Arc::new(BarMap { ptr: ptr as *mut u8, len: size as usize }))
    }

    fn config_read_raw(device: &VfioDevice, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let base = device.get_region_offset(VFIO_PCI_CONFIG_REGION_INDEX);
        // SAFETY: pread into a valid, exclusively borrowed buffer of buf.len() bytes.
        let n = unsafe {
            libc::pread(
                device.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                (base + off) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short config read"));
        }
        Ok(())
    }

    fn config_write_raw(&self, off: u64, buf: &[u8]) -> std::io::Result<()> {
        let base = self.device.get_region_offset(VFIO_PCI_CONFIG_REGION_INDEX);
        // SAFETY: pwrite from a valid buffer of buf.len() bytes.
        let n = unsafe {
            libc::pwrite(
                self.device.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                (base + off) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "short config write"));
        }
        Ok(())
    }

    /// Read a 16-bit config-space register.
    pub fn config_read16(&self, off: u64) -> Result<u16, VfioError> {
        let mut b = [0u8; 2];
        Self::config_read_raw(&self.device, off, &mut b)
            .map_err(|source| VfioError::Config { bdf: self.bdf, source })?;
        Ok(u16::from_le_bytes(b))
    }

    /// Turn PCI bus mastering (the NIC's ability to DMA) on or off.
    pub fn set_bus_master(&self, on: bool) -> Result<(), VfioError> {
        let mut cmd = self.config_read16(PCI_COMMAND)?;
        if on {
            cmd |= PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
        } else {
            cmd &= !PCI_COMMAND_MASTER;
        }
        self.config_write_raw(PCI_COMMAND, &cmd.to_le_bytes())
            .map_err(|source| VfioError::Config { bdf: self.bdf, source })
    }

    /// Route up to `wanted` MSI-X vectors to fresh non-blocking eventfds.
    pub fn enable_msix(&mut self, wanted: u32) -> Result<usize, VfioError> {
        let avail = self.device.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).map(|i| i.count).unwrap_or(0);
        let n = wanted.min(avail);
        if n == 0 {
            return Ok(0);
        }
        let fds =
            (0..n).map(|_| EventFd::new(EFD_NONBLOCK).map_err(VfioError::EventFd)).collect::<Result<Vec<_>, _>>()?;
        self.device.enable_msix(fds.iter().collect()).map_err(|source| VfioError::Vfio {
            bdf: self.bdf,
            what: "MSI-X enable (VFIO_DEVICE_SET_IRQS)",
            source,
        })?;
        self.irq_fds = fds;
        Ok(n as usize)
    }

    pub fn irq_fds(&self) -> &[EventFd] {
        &self.irq_fds
    }

    pub fn raw_irq_fds(&self) -> Vec<RawFd> {
        self.irq_fds.iter().map(|e| e.as_raw_fd()).collect()
    }

    /// Function-level reset through VFIO, reporting whether it happened
    /// (`VFIO_DEVICE_RESET`); bus mastering stays off afterwards.
    pub fn function_reset(&self) -> Result<(), VfioError> {
        // _IO(VFIO_TYPE, VFIO_BASE + 11), linux/vfio.h.
        const VFIO_DEVICE_RESET: libc::c_ulong = (b';' as libc::c_ulong) << 8 | (100 + 11);
        // SAFETY: VFIO_DEVICE_RESET takes no argument; the fd is the VFIO
        // device's, open for as long as `self.device` lives.
        let r = unsafe { libc::ioctl(self.device.as_raw_fd(), VFIO_DEVICE_RESET as _) };
        if r != 0 {
            return Err(VfioError::Config { bdf: self.bdf, source: std::io::Error::last_os_error() });
        }
        Ok(())
    }

    /// Function-level reset through VFIO (if the device supports it); bus
    /// mastering is re-enabled afterwards.
    pub fn device_reset(&self) -> Result<(), VfioError> {
        self.device.reset();
        self.set_bus_master(true)
    }

    pub fn regs(&self) -> MmioRegs {
        MmioRegs { bar: self.bar.clone() }
    }

    pub fn dma_mapper(&self) -> Arc<dyn DmaMapper> {
        self.dma.clone()
    }

    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    pub fn ids(&self) -> (u16, u16) {
        (self.info.vendor, self.info.device)
    }

    pub fn bar0_len(&self) -> usize {
        self.bar.len
    }
}

impl crate::e1000_common::PciControl for VfioNic {
    fn set_bus_master(&self, on: bool) -> Result<(), String> {
        VfioNic::set_bus_master(self, on).map_err(|e| e.to_string())
    }

    fn function_reset(&self) -> Result<(), String> {
        VfioNic::function_reset(self).map_err(|e| e.to_string())
    }
}

impl Drop for VfioNic {
    fn drop(&mut self) {
        // Stop DMA before the IOMMU mappings go away: bus master off, then
        // interrupts off, then unmap.
        if let Err(e) = self.set_bus_master(false) {
            log::error!("{e}");
        }
        if !self.irq_fds.is_empty() {
            let _ = self.device.disable_msix();
        }
        self.dma.unmap_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct FakeHost {
        dir: PathBuf,
    }

    impl FakeHost {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("pnic-vfio-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("sys/bus/pci/devices")).unwrap();
            fs::create_dir_all(dir.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
            fs::create_dir_all(dir.join("sys/bus/pci/drivers/igb")).unwrap();
            fs::create_dir_all(dir.join("sys/kernel/iommu_groups")).unwrap();
            fs::create_dir_all(dir.join("dev/vfio")).unwrap();
            fs::write(dir.join("dev/vfio/vfio"), "").unwrap();
            FakeHost { dir }
        }
        fn paths(&self) -> HostPaths {
            HostPaths { sys: self.dir.join("sys"), dev: self.dir.join("dev") }
        }
        fn add(&self, bdf: &str, vendor: &str, device: &str, driver: Option<&str>, group: u32) {
            let d = self.dir.join("sys/bus/pci/devices").join(bdf);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
            fs::write(d.join("device"), format!("{device}\n")).unwrap();
            if let Some(drv) = driver {
                let t = self.dir.join("sys/bus/pci/drivers").join(drv);
                fs::create_dir_all(&t).unwrap();
                symlink(&t, d.join("driver")).unwrap();
            }
            let g = self.dir.join("sys/kernel/iommu_groups").join(group.to_string());
            fs::create_dir_all(g.join("devices")).unwrap();
            symlink(&d, g.join("devices").join(bdf)).unwrap();
            symlink(&g, d.join("iommu_group")).unwrap();
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    #[test]
    fn missing_device() {
        let h = FakeHost::new("missing");
        let e = precheck(&h.paths(), bdf("01:00.0")).unwrap_err();
        assert!(matches!(e, VfioError::NotFound(_)));
        assert!(e.to_string().contains("0000:01:00.0 not found"), "{e}");
    }

    #[test]
    fn bound_to_kernel_driver() {
        let h = FakeHost::new("kdrv");
        h.add("0000:01:00.0", "0x8086", "0x10c9", Some("igb"), 5);
        let e = precheck(&h.paths(), bdf("0000:01:00.0")).unwrap_err().to_string();
        assert!(e.contains("bound to driver 'igb'"), "{e}");
        assert!(e.contains("driver_override"), "{e}");
        let h2 = FakeHost::new("nodrv");
        h2.add("0000:01:00.0", "0x8086", "0x10c9", None, 5);
        let e = precheck(&h2.paths(), bdf("0000:01:00.0")).unwrap_err().to_string();
        assert!(e.contains("bound to driver 'none'"), "{e}");
    }

    #[test]
    fn unsupported_ids() {
        let h = FakeHost::new("unsup");
        h.add("0000:01:00.0", "0x10ec", "0x8168", Some("vfio-pci"), 5);
        let e = precheck(&h.paths(), bdf("0000:01:00.0")).unwrap_err().to_string();
        assert!(e.contains("10ec:8168"), "{e}");
        assert!(e.contains("8086:10c9"), "{e}");
    }

    #[test]
    fn no_iommu() {
        let h = FakeHost::new("noiommu");
        h.add("0000:01:00.0", "0x8086", "0x10c9", Some("vfio-pci"), 5);
        fs::remove_file(h.dir.join("dev/vfio/vfio")).unwrap();
        let e = precheck(&h.paths(), bdf("0000:01:00.0")).unwrap_err().to_string();
        assert!(e.contains("intel_iommu=on"), "{e}");
    }

    #[test]
    fn group_not_viable() {
        let h = FakeHost::new("group");
        h.add("0000:01:00.0", "0x8086", "0x10c9", Some("vfio-pci"), 7);
        h.add("0000:01:00.1", "0x8086", "0x10c9", Some("igb"), 7);
        let e = precheck(&h.paths(), bdf("0000:01:00.0")).unwrap_err().to_string();
        assert!(e.contains("0000:01:00.1 (bound to igb)"), "{e}");
        assert!(e.contains("group 7"), "{e}");
    }

    #[test]
    fn all_good() {
        let h = FakeHost::new("good");
        h.add("0000:01:00.0", "0x8086", "0x10c9", Some("vfio-pci"), 7);
        h.add("0000:00:01.0", "0x8086", "0x1234", Some("pcieport"), 7);
        let i = precheck(&h.paths(), bdf("01:00.0")).unwrap();
        assert_eq!((i.vendor, i.device, i.group), (0x8086, 0x10c9, 7));
    }
}
