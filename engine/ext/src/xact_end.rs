//! Per-transaction state kept in backend memory must be forgotten when the
//! transaction ends, and a transaction ends in one of three ways: commit,
//! abort, or PREPARE TRANSACTION (after which the session runs new
//! transactions while the prepared one waits for COMMIT PREPARED). pgrx's
//! commit and abort callbacks miss the third.

use std::cell::Cell;
use std::rc::Rc;

use pgrx::{register_xact_callback, PgXactCallbackEvent};

/// Run `forget` once when the current transaction commits, aborts or is
/// prepared, whichever comes first.
pub fn on_transaction_end(forget: fn()) {
    // pgrx drops a transaction's commit and abort callbacks only at commit
    // or abort: after PREPARE they would still fire at the end of the
    // session's next transaction, so each runs at most once, and only
    // while this transaction has not ended yet.
    let ended = Rc::new(Cell::new(false));
    for event in [
        PgXactCallbackEvent::Commit,
        PgXactCallbackEvent::Abort,
        PgXactCallbackEvent::Prepare,
    ] {
        let ended = std::panic::AssertUnwindSafe(ended.clone());
        register_xact_callback(event, move || {
            if !ended.replace(true) {
                forget();
            }
        });
    }
}
