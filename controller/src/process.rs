//! Process-wide behaviour shared by the `kiln-controller` and `kiln-node`
//! binaries.

/// Make any panic, on any thread, end the process after printing it.
///
/// This is what `panic = "abort"` gave before the profiles dropped it (test
/// builds need unwinding, and mixing strategies compiled everything twice).
/// A panicked task inside tokio would otherwise be caught and the service
/// would go on with a half-done operation and no sign of it but a log line.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
