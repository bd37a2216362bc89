//! Process-wide settings both binaries (`triscope`, `bench`) make first thing in `main`.

/// Keep freed memory in the process instead of handing it back to the operating system
/// (glibc: no `mmap` for large blocks, no trimming of the heap). A training step or a batched
/// attack frees and reallocates the same tens of megabytes of activations every pass; handed
/// back, every new allocation page-faults and the kernel zeroes it again (measured: 19% of a
/// TRADES step on 2 cores). The price is that the resident size stays at its peak. Binaries
/// call this once at start; elsewhere (other C libraries) it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread that
    // allocates is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Make burn's default device the CPU (flex). Triscope names its device everywhere, but burn
/// itself takes `Device::default()` where it is given none: `ModuleOptimizer::load_record`
/// (a resumed run's optimizer state) stages the state there before the next step moves it to
/// the parameters' device. That default is the first backend compiled in, wgpu, so resuming a
/// CPU run started Vulkan (and printed the loader's and Mesa's warnings, e.g. about
/// `XDG_RUNTIME_DIR`) for nothing. `BURN_DEVICE` is burn's own switch for that default; it
/// changes nothing that names a device.
///
/// # Safety
///
/// Writes the process environment: call it before any other thread is started (the start of
/// `main`), as `std::env::set_var` requires.
pub unsafe fn default_burn_device_to_cpu() {
    // SAFETY: the caller guarantees that no other thread reads or writes the environment.
    unsafe { std::env::set_var("BURN_DEVICE", "flex") };
}
