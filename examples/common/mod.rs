//! Helpers of the examples (no `unsafe` here either).

pub mod http;
pub mod open_files;
