//! The threads a virtio device runs (queue workers, a control queue), each
//! with a stop eventfd: started on activation, stopped and joined on reset.

use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use super::VirtioError;

/// Stack of a device thread: they keep their buffers on the heap.
const STACK: usize = 256 * 1024;

/// A device's running threads.
#[derive(Default)]
pub struct DeviceThreads(Vec<(EventFd, JoinHandle<()>)>);

impl DeviceThreads {
    /// Start thread `name`: `make` gets the thread's own handle on a fresh
    /// stop eventfd and returns what the thread runs.
    pub fn spawn<F: FnOnce() + Send + 'static>(
        &mut self,
        name: String,
        make: impl FnOnce(EventFd) -> Result<F, VirtioError>,
    ) -> Result<(), VirtioError> {
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        let body = make(stop.try_clone().map_err(VirtioError::EventFd)?)?;
        let handle = std::thread::Builder::new()
            .name(name)
            .stack_size(STACK)
            .spawn(body)
            .map_err(VirtioError::Thread)?;
        self.0.push((stop, handle));
        Ok(())
    }

    /// Tell every thread to stop and wait for each to end.
    pub fn stop_all(&mut self) {
        for (stop, handle) in self.0.drain(..) {
            let _ = stop.write(1);
            let _ = handle.join();
        }
    }
}
