//! Helpers of the examples, in safe Rust like the examples themselves.

pub mod http;
pub mod open_files;
