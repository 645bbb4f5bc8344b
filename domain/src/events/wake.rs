//! Wakes this process's outbox relay when an event was just written here, so a change made by
//! this process reaches the bus within milliseconds instead of at the relay's next poll (the
//! poll stays for events written by other processes and for retries).

use tokio::sync::Notify;

static WRITTEN: Notify = Notify::const_new();

/// Called after outbox rows are written (before their transaction commits: the relay allows
/// for that, see `ruizhu::workers::spawn_relay`).
pub(crate) fn outbox_written() {
    WRITTEN.notify_one();
}

/// Resolves after the next [`outbox_written`] (or at once if one happened since the last wait).
pub async fn written() {
    WRITTEN.notified().await;
}
