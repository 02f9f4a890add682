//! The wall clock. The core never reads it: the service passes "now" into the engine as a
//! number (idle input, broker health, latency), so the engine stays deterministic.

use segstream_core::time::Millis;

/// Milliseconds since the Unix epoch, by the system's wall clock.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}
