//! MSI for the harness: the edu device through `vfio-pci`, with its one MSI
//! vector signalled on an eventfd.
//!
//! Debian's kernel is built without `CONFIG_VFIO_NOIOMMU`, so vfio runs in
//! its ordinary mode, the type1 IOMMU backend over the virtual IOMMU that
//! `scripts/hil.sh` gives the guest (`-device intel-iommu`, booted with
//! `iommu=pt`, so `uio_pci_generic`'s INTx phases keep using physical
//! addresses through a pass-through domain). The harness maps every locked
//! page of its pool at an I/O virtual address equal to the physical address
//! it recorded, so the HAL's bus addresses are the same on both paths.
//!
//! The ioctl numbers and structure layouts are those of the kernel's uapi
//! `linux/vfio.h` (`_IO(';', 100 + n)`), written out here.
//!
//! `unsafe` lives here only for the ioctls, `eventfd` and `poll`; every block
//! says why it is sound.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::linux::{Bar, PciDevice, Wait};

fn err(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: type `';'`, base 100, no size or direction.
const fn vfio_io(n: u32) -> u32 {
    ((b';' as u32) << 8) | (100 + n)
}

const VFIO_GET_API_VERSION: u32 = vfio_io(0);
const VFIO_CHECK_EXTENSION: u32 = vfio_io(1);
const VFIO_SET_IOMMU: u32 = vfio_io(2);
const VFIO_GROUP_GET_STATUS: u32 = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: u32 = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: u32 = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
const VFIO_DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: u32 = vfio_io(10);
const VFIO_IOMMU_MAP_DMA: u32 = vfio_io(13);

const VFIO_API_VERSION: i32 = 0;
const VFIO_TYPE1_IOMMU: libc::c_ulong = 1;
const VFIO_TYPE1V2_IOMMU: libc::c_ulong = 3;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
const VFIO_PCI_MSI_IRQ_INDEX: u32 = 1;
const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
const VFIO_DMA_MAP_FLAG_READ: u32 = 1;
const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// `struct vfio_group_status`.
#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// `struct vfio_region_info` (without capabilities).
#[repr(C)]
#[derive(Default)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

/// `struct vfio_irq_info`.
#[repr(C)]
#[derive(Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// `struct vfio_irq_set` with one eventfd as its data.
#[repr(C)]
struct IrqSetOneEventfd {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fd: i32,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

/// An ioctl whose argument is a pointer to `arg`.
fn ioctl_ptr<T>(fd: &impl AsRawFd, request: u32, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed `#[repr(C)]` value of
    // the layout the request expects (its `argsz`, where it has one, says
    // how much the kernel may touch); the fd is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, std::ptr::from_mut(arg)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An ioctl whose argument is an integer passed by value.
fn ioctl_val(fd: &impl AsRawFd, request: u32, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the request takes its argument by value (no memory is
    // passed); the fd is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Move the device from its driver (`uio_pci_generic`) to `vfio-pci`:
/// `driver_override`, unbind, re-probe, and wait for the new driver.
pub fn bind_vfio_pci(pci: &PciDevice) -> io::Result<()> {
    let dir = pci.dir();
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err("device without a name"))?
        .to_string();
    let current = || {
        fs::read_link(dir.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    if current().as_deref() == Some("vfio-pci") {
        return Ok(());
    }
    fs::write(dir.join("driver_override"), "vfio-pci")
        .map_err(|e| err(format!("driver_override: {e}")))?;
    if current().is_some() {
        fs::write(dir.join("driver/unbind"), &name).map_err(|e| err(format!("unbind: {e}")))?;
    }
    fs::write("/sys/bus/pci/drivers_probe", &name)
        .map_err(|e| err(format!("drivers_probe: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if current().as_deref() == Some("vfio-pci") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(err(format!(
                "vfio-pci did not bind (driver now {:?})",
                current()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An open vfio device: its container (type1 IOMMU), group and device fd.
pub struct Vfio {
    container: File,
    _group: File,
    device: File,
    /// The IOMMU group number (`/dev/vfio/N`).
    pub group: u32,
    /// The backend set on the container (`VFIO_TYPE1v2_IOMMU` or `VFIO_TYPE1_IOMMU`).
    pub iommu_type: u32,
}

impl Vfio {
    /// Open the group of `pci` (bound to `vfio-pci`), put it in a new
    /// container with the type1 backend, and get the device fd.
    pub fn open(pci: &PciDevice) -> io::Result<Self> {
        let dir = pci.dir();
        let link = fs::read_link(dir.join("iommu_group"))
            .map_err(|e| err(format!("no IOMMU group ({e}): is the IOMMU on?")))?;
        let group: u32 = link
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| err(format!("odd iommu_group link {}", link.display())))?;
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| err(format!("{}: {e}", path.display())))
        };
        let container = open(Path::new("/dev/vfio/vfio"))?;
        let version = ioctl_val(&container, VFIO_GET_API_VERSION, 0)?;
        if version != VFIO_API_VERSION {
            return Err(err(format!("vfio API version {version}")));
        }
        let iommu = if ioctl_val(&container, VFIO_CHECK_EXTENSION, VFIO_TYPE1V2_IOMMU)? > 0 {
            VFIO_TYPE1V2_IOMMU
        } else if ioctl_val(&container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU)? > 0 {
            VFIO_TYPE1_IOMMU
        } else {
            return Err(err("the container offers no type1 IOMMU backend"));
        };
        let group_file = open(&Path::new("/dev/vfio").join(group.to_string()))?;
        let mut status = GroupStatus {
            argsz: argsz::<GroupStatus>(),
            flags: 0,
        };
        ioctl_ptr(&group_file, VFIO_GROUP_GET_STATUS, &mut status)?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(err(format!(
                "IOMMU group {group} is not viable (another device in it is not bound to vfio)"
            )));
        }
        let mut container_fd: i32 = container.as_raw_fd();
        ioctl_ptr(&group_file, VFIO_GROUP_SET_CONTAINER, &mut container_fd)
            .map_err(|e| err(format!("VFIO_GROUP_SET_CONTAINER: {e}")))?;
        ioctl_val(&container, VFIO_SET_IOMMU, iommu)
            .map_err(|e| err(format!("VFIO_SET_IOMMU: {e}")))?;
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| err("device without a name"))?;
        let mut cname: Vec<u8> = name.bytes().chain([0]).collect();
        // The argument is the device's name, a C string.
        let fd = ioctl_ptr(&group_file, VFIO_GROUP_GET_DEVICE_FD, &mut cname[0])
            .map_err(|e| err(format!("VFIO_GROUP_GET_DEVICE_FD: {e}")))?;
        // SAFETY: the ioctl returned a new file descriptor that nothing else owns.
        let device = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Self {
            container,
            _group: group_file,
            device,
            group,
            iommu_type: iommu as u32,
        })
    }

    /// Map BAR0 through the device fd (its region's offset).
    pub fn map_bar0(&self) -> io::Result<Bar> {
        let mut info = RegionInfo {
            argsz: argsz::<RegionInfo>(),
            index: VFIO_PCI_BAR0_REGION_INDEX,
            ..RegionInfo::default()
        };
        ioctl_ptr(&self.device, VFIO_DEVICE_GET_REGION_INFO, &mut info)
            .map_err(|e| err(format!("VFIO_DEVICE_GET_REGION_INFO: {e}")))?;
        if info.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(err(format!(
                "BAR0 cannot be mapped (flags 0x{:x})",
                info.flags
            )));
        }
        if info.size < edudma_core::regs::BAR0_SIZE {
            return Err(err(format!("BAR0 region of {} bytes", info.size)));
        }
        Bar::map_file(&self.device, info.offset)
    }

    /// Map `size` bytes of this process at `vaddr` for the device at `iova`
    /// (read and write).
    pub fn map_dma(&self, vaddr: usize, iova: u64, size: u64) -> io::Result<()> {
        let mut map = DmaMap {
            argsz: argsz::<DmaMap>(),
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: vaddr as u64,
            iova,
            size,
        };
        ioctl_ptr(&self.container, VFIO_IOMMU_MAP_DMA, &mut map)
            .map(|_| ())
            .map_err(|e| err(format!("VFIO_IOMMU_MAP_DMA iova 0x{iova:x}: {e}")))
    }

    /// How many MSI vectors the device offers.
    pub fn msi_vectors(&self) -> io::Result<u32> {
        let mut info = IrqInfo {
            argsz: argsz::<IrqInfo>(),
            index: VFIO_PCI_MSI_IRQ_INDEX,
            ..IrqInfo::default()
        };
        ioctl_ptr(&self.device, VFIO_DEVICE_GET_IRQ_INFO, &mut info)
            .map_err(|e| err(format!("VFIO_DEVICE_GET_IRQ_INFO: {e}")))?;
        Ok(info.count)
    }

    /// Enable MSI vector 0 with an eventfd as its trigger (the kernel
    /// programs the MSI capability, which also disables INTx).
    pub fn enable_msi(&self) -> io::Result<Msi> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new file descriptor that nothing else owns.
        let eventfd = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut set = IrqSetOneEventfd {
            argsz: argsz::<IrqSetOneEventfd>(),
            flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: VFIO_PCI_MSI_IRQ_INDEX,
            start: 0,
            count: 1,
            fd: eventfd.as_raw_fd(),
        };
        ioctl_ptr(&self.device, VFIO_DEVICE_SET_IRQS, &mut set)
            .map_err(|e| err(format!("VFIO_DEVICE_SET_IRQS (MSI): {e}")))?;
        Ok(Msi { eventfd })
    }
}

/// MSI vector 0 of the device: an eventfd the kernel's handler signals once
/// per message.
pub struct Msi {
    eventfd: File,
}

impl Msi {
    /// Wait for a message with `poll()` and a timeout; the count is the
    /// number of messages since the last wait.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Wait> {
        let mut pfd = libc::pollfd {
            fd: self.eventfd.as_raw_fd(),
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
        let mut buf = [0u8; 8];
        match io::Read::read(&mut &self.eventfd, &mut buf) {
            Ok(8) => {
                let count = u64::from_ne_bytes(buf);
                Ok(Wait::Interrupt(u32::try_from(count).unwrap_or(u32::MAX)))
            }
            Ok(_) => Err(err("short read from the MSI eventfd")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Wait::Timeout),
            Err(e) => Err(e),
        }
    }
}
