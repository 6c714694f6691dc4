//! What the harness needs from Linux, as root in the guest: the edu device's
//! sysfs node and config space, BAR0 mapped from `resource0`, interrupts
//! through `uio_pci_generic`, and locked pages with their physical addresses
//! from `/proc/self/pagemap`.
//!
//! `unsafe` lives here only, where `mmap`, volatile MMIO and raw memory
//! demand it; every block says why it is sound.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edudma_core::regs::{self, RegisterFile};

use crate::hal::{PAGE_SIZE, PageId};

fn err(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// PCI command register bits.
pub mod command {
    /// Memory space enable.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus master enable.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// INTx disable (the mask `uio_pci_generic` sets after each interrupt).
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// The edu device in sysfs.
pub struct PciDevice {
    dir: PathBuf,
    config: File,
}

impl PciDevice {
    /// Find the first device with the edu vendor and device ids.
    pub fn find() -> io::Result<Self> {
        for entry in fs::read_dir("/sys/bus/pci/devices")? {
            let dir = entry?.path();
            let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
            let vendor = u16::from_str_radix(read("vendor").trim().trim_start_matches("0x"), 16);
            let device = u16::from_str_radix(read("device").trim().trim_start_matches("0x"), 16);
            if vendor == Ok(regs::PCI_VENDOR_ID) && device == Ok(regs::PCI_DEVICE_ID) {
                let config = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join("config"))?;
                return Ok(Self { dir, config });
            }
        }
        Err(err("no edu device (1234:11e8) in /sys/bus/pci/devices"))
    }

    /// The sysfs directory (`/sys/bus/pci/devices/0000:00:02.0`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read `N` bytes of config space at `offset`.
    pub fn config_read<const N: usize>(&self, offset: u64) -> io::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.config.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// The command register.
    pub fn command(&self) -> io::Result<u16> {
        Ok(u16::from_le_bytes(self.config_read::<2>(4)?))
    }

    /// Write the command register.
    pub fn set_command(&self, value: u16) -> io::Result<()> {
        self.config.write_all_at(&value.to_le_bytes(), 4)
    }

    /// Set and clear command bits.
    pub fn update_command(&self, set: u16, clear: u16) -> io::Result<u16> {
        let value = (self.command()? | set) & !clear;
        self.set_command(value)?;
        Ok(value)
    }

    /// `echo 1 > enable`.
    pub fn enable(&self) -> io::Result<()> {
        fs::write(self.dir.join("enable"), "1")
    }

    /// Bind `uio_pci_generic` and open its `/dev/uioN`.
    pub fn bind_uio(&self) -> io::Result<Uio> {
        let uio_dir = self.dir.join("uio");
        if !uio_dir.exists() {
            let ids = format!("{:04x} {:04x}", regs::PCI_VENDOR_ID, regs::PCI_DEVICE_ID);
            let new_id = Path::new("/sys/bus/pci/drivers/uio_pci_generic/new_id");
            if let Err(e) = fs::write(new_id, &ids) {
                // Already known ids give EEXIST; bind explicitly then.
                let name = self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
                fs::write("/sys/bus/pci/drivers/uio_pci_generic/bind", name)
                    .map_err(|e2| err(format!("binding uio_pci_generic: {e}; {e2}")))?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(name) = fs::read_dir(&uio_dir)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(Result::ok)
                .map(|e| e.file_name())
            {
                let dev = Path::new("/dev").join(&name);
                if dev.exists() {
                    let file = OpenOptions::new().read(true).write(true).open(&dev)?;
                    return Ok(Uio { file, last: 0 });
                }
            }
            if Instant::now() > deadline {
                return Err(err("uio_pci_generic did not create /dev/uioN"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Map BAR0 from `resource0`.
    pub fn map_bar0(&self) -> io::Result<Bar> {
        Bar::map(&self.dir.join("resource0"))
    }
}

/// `/dev/uioN` of `uio_pci_generic`.
pub struct Uio {
    file: File,
    last: u32,
}

/// What waiting for an interrupt gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The kernel saw the line asserted (and masked INTx): this many events since the last wait.
    Interrupt(u32),
    /// Nothing within the timeout.
    Timeout,
}

impl Uio {
    /// Wait for an interrupt with `poll()` and a timeout, never a bare read.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Wait> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and
        // the count (1) matches the one element passed.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(Wait::Timeout);
            }
            return Err(e);
        }
        if n == 0 || pfd.revents & libc::POLLIN == 0 {
            return Ok(Wait::Timeout);
        }
        let mut buf = [0u8; 4];
        let got = io::Read::read(&mut &self.file, &mut buf)?;
        if got != 4 {
            return Err(err("short read from /dev/uio"));
        }
        let count = u32::from_ne_bytes(buf);
        let events = count.wrapping_sub(self.last);
        self.last = count;
        Ok(Wait::Interrupt(events.max(1)))
    }
}

/// BAR0 of the edu device, mapped from sysfs.
pub struct Bar {
    base: *mut u8,
    len: usize,
    /// 4-byte reads done.
    pub reads: u64,
    /// 4-byte writes done.
    pub writes: u64,
}

// SAFETY: `Bar` owns its mapping, which stays valid in every thread of the
// process until `drop`; moving it to another thread (the simulated kernel's,
// in the lockstep run) moves that ownership, and it has no thread affinity.
unsafe impl Send for Bar {}

impl Bar {
    fn map(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_sync()
            .open(path)?;
        Self::map_file(&file, 0)
    }

    /// Map BAR0's registers from `file` at `offset` (sysfs `resource0` at 0,
    /// or a vfio device fd at its region's offset). The mapping outlives `file`.
    pub fn map_file(file: &File, offset: u64) -> io::Result<Self> {
        let len = regs::BAR0_SIZE as usize;
        let offset = libc::off_t::try_from(offset).map_err(|_| err("BAR offset out of range"))?;
        // SAFETY: a fresh shared mapping of the BAR file; the kernel picks the
        // address; we check the result before using it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: base.cast(),
            len,
            reads: 0,
            writes: 0,
        })
    }

    fn ptr<T>(&self, offset: u32) -> Option<*mut T> {
        let offset = offset as usize;
        let size = size_of::<T>();
        (offset % size == 0 && offset.checked_add(size)? <= self.len)
            // SAFETY: offset + size is inside the mapping (checked above).
            .then(|| unsafe { self.base.add(offset) }.cast())
    }

    /// A volatile read of `T` (4 or 8 bytes, or 2 for conformance probes).
    pub fn read<T: Copy + Default>(&mut self, offset: u32) -> T {
        match self.ptr::<T>(offset) {
            // SAFETY: `p` is aligned and inside the live MMIO mapping; a
            // volatile access is one load of that size, as MMIO needs.
            Some(p) => unsafe { p.read_volatile() },
            None => T::default(),
        }
    }

    /// A volatile write of `T`.
    pub fn write<T: Copy>(&mut self, offset: u32, value: T) {
        if let Some(p) = self.ptr::<T>(offset) {
            // SAFETY: as in `read`: aligned, inside the live mapping, one store.
            unsafe { p.write_volatile(value) }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `map`; no pointer
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

trait SyncOpen {
    fn custom_flags_sync(&mut self) -> &mut Self;
}

impl SyncOpen for OpenOptions {
    fn custom_flags_sync(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_SYNC)
    }
}

impl RegisterFile for Bar {
    fn read32(&mut self, offset: u32) -> u32 {
        self.reads += 1;
        if self.ptr::<u32>(offset).is_none() {
            return u32::MAX;
        }
        self.read::<u32>(offset)
    }

    fn write32(&mut self, offset: u32, value: u32) {
        self.writes += 1;
        self.write::<u32>(offset, value);
    }

    fn stall_us(&mut self, micros: u32) {
        std::thread::sleep(Duration::from_micros(u64::from(micros)));
    }
}

/// One locked page of the pool.
#[derive(Clone, Copy, Debug)]
struct Slot {
    va: usize,
    phys: u64,
}

/// Locked anonymous pages with known physical addresses.
pub struct PagePool {
    slots: Vec<Slot>,
    chunks: Vec<(usize, usize)>,
    pagemap: File,
}

const PFN_MASK: u64 = (1 << 55) - 1;
const PRESENT: u64 = 1 << 63;

fn pagemap_phys(pagemap: &File, va: usize) -> Option<u64> {
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, (va / PAGE_SIZE) as u64 * 8)
        .ok()?;
    let entry = u64::from_le_bytes(entry);
    let pfn = entry & PFN_MASK;
    (entry & PRESENT != 0 && pfn != 0).then_some(pfn * PAGE_SIZE as u64)
}

impl PagePool {
    /// An empty pool.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            slots: Vec::new(),
            chunks: Vec::new(),
            pagemap: File::open("/proc/self/pagemap")?,
        })
    }

    /// Lock `pages` more pages (one mapping, `MADV_NOHUGEPAGE`, `mlock`,
    /// touched) and record their physical addresses. Returns the first new id.
    pub fn grow(&mut self, pages: usize) -> io::Result<PageId> {
        let len = pages * PAGE_SIZE;
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let va = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if va == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.chunks.push((va as usize, len));
        // SAFETY: advice and locking on exactly the mapping just created.
        let rc = unsafe {
            libc::madvise(va, len, libc::MADV_NOHUGEPAGE);
            libc::mlock(va, len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let first = self.slots.len();
        for i in 0..pages {
            let page_va = va as usize + i * PAGE_SIZE;
            // SAFETY: the page is inside the mapping created above, writable
            // and private to this process; touching it makes it resident.
            unsafe { (page_va as *mut u8).write_volatile(0) };
            let phys = pagemap_phys(&self.pagemap, page_va).ok_or_else(|| {
                err("/proc/self/pagemap gave no PFN (not root, or the page is not present)")
            })?;
            self.slots.push(Slot { va: page_va, phys });
        }
        Ok(first)
    }

    /// Every page of the pool: its virtual address and the physical address
    /// recorded when it was locked.
    pub fn frames(&self) -> Vec<(usize, u64)> {
        self.slots.iter().map(|s| (s.va, s.phys)).collect()
    }

    /// Number of pages in the pool.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the pool holds no page.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The physical address recorded when the page was locked.
    pub fn locked_phys(&self, page: PageId) -> Option<u64> {
        self.slots.get(page).map(|s| s.phys)
    }

    /// Ids of the pages whose recorded address satisfies `keep`.
    pub fn pages_where(&self, keep: impl Fn(u64) -> bool) -> Vec<PageId> {
        (0..self.slots.len())
            .filter(|&i| keep(self.slots[i].phys))
            .collect()
    }

    fn page_ptr(&self, page: PageId, offset: usize, len: usize) -> Option<*mut u8> {
        let slot = self.slots.get(page)?;
        (offset.checked_add(len)? <= PAGE_SIZE).then_some((slot.va + offset) as *mut u8)
    }
}

impl Drop for PagePool {
    fn drop(&mut self) {
        for &(va, len) in &self.chunks {
            // SAFETY: unmapping mappings this pool created; no slot is used after.
            unsafe {
                libc::munmap(va as *mut libc::c_void, len);
            }
        }
    }
}

impl PagePool {
    /// The physical address of `page` as `/proc/self/pagemap` reports it now.
    pub fn phys_now(&self, page: PageId) -> Option<u64> {
        let slot = self.slots.get(page)?;
        pagemap_phys(&self.pagemap, slot.va)
    }

    /// Copy bytes out of a page (volatile: the device writes it behind the
    /// compiler's back). Bytes past the page end are left untouched.
    pub fn read_bytes(&self, page: PageId, offset: usize, out: &mut [u8]) {
        let len = out.len().min(PAGE_SIZE.saturating_sub(offset));
        let Some(p) = self.page_ptr(page, offset, len) else {
            return;
        };
        for (i, byte) in out[..len].iter_mut().enumerate() {
            // SAFETY: `p..p+len` lies inside a locked page of a mapping this
            // pool owns (checked by `page_ptr`); byte reads need no alignment.
            *byte = unsafe { p.add(i).read_volatile() };
        }
    }

    /// Copy bytes into a page. Bytes past the page end are dropped.
    pub fn write_bytes(&self, page: PageId, offset: usize, data: &[u8]) {
        let len = data.len().min(PAGE_SIZE.saturating_sub(offset));
        let Some(p) = self.page_ptr(page, offset, len) else {
            return;
        };
        for (i, &byte) in data[..len].iter().enumerate() {
            // SAFETY: as in `read_bytes`: inside a locked page this pool owns,
            // which no Rust reference aliases (it is only reached through `va`).
            unsafe { p.add(i).write_volatile(byte) };
        }
    }
}
