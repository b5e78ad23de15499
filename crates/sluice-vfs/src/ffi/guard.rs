//! No panic crosses into SQLite: every callback runs inside [`guard`]. Errors become SQLite
//! codes in one place ([`Error::sqlite_code`]) and a log line that names the object.

use std::any::Any;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::Error;

/// Runs `f`; a panic is logged and becomes `on_panic`.
pub fn guard(what: &'static str, on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(payload) => {
            log_panic(what, payload.as_ref());
            on_panic
        }
    }
}

/// Logs a caught panic (itself guarded: a panicking subscriber must not unwind either).
pub fn log_panic(what: &'static str, payload: &(dyn Any + Send)) {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    let _ = catch_unwind(AssertUnwindSafe(|| tracing::error!(target: "sluice_vfs", "{}: {msg}", Error::Panic(what))));
}

/// The SQLite code for `e`, after logging it: refused writes are expected (debug), anything
/// else is a problem the operator should see (warn), with the object named by the message.
pub fn report(what: &'static str, e: &Error) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| match e {
        Error::ReadOnly { .. } => tracing::debug!(target: "sluice_vfs", "{what}: {e}"),
        _ => tracing::warn!(target: "sluice_vfs", "{what}: {e}"),
    }));
    e.sqlite_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::rc;

    #[test]
    fn a_panic_becomes_the_given_code() {
        assert_eq!(guard("test", rc::IOERR, || panic!("boom")), rc::IOERR);
        assert_eq!(guard("test", rc::IOERR, || rc::OK), rc::OK);
        let e = Error::ReadOnly { db: "a".into(), what: "write" };
        assert_eq!(report("xWrite", &e), rc::READONLY);
    }
}
