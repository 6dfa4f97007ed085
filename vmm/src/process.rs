//! Process-wide behaviour of the `kiln-vmm` binary.

/// Make any panic, on any thread, end the VMM after printing it.
///
/// A VMM whose device or vCPU thread died must not keep the guest running
/// half-served; this is what `panic = "abort"` gave before the profiles
/// dropped it (test builds need unwinding, and mixing strategies compiled
/// every crate twice). The node sees the exit and reports the server.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
