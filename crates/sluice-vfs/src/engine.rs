//! The engine's read path, which this crate presents to SQLite.

pub use sluice_engine::read::{Hydration, ReadOptions, Replica, View, parse_time};
