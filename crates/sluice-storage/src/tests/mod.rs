//! Crate tests that span modules (unit tests live next to their code).

mod client_tests;
mod config_tests;
mod fault_tests;
mod file_transfer_tests;
