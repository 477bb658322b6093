//! The parts of the `compare` benchmark.
//!
//! * `spec` — what a point is (method, regime, workload, queue depth) and what a run measured;
//! * `measure` — CPU time, the timed window, per-operation accounting, aligned buffers;
//! * `mio_method`, `tokio_method`, `threads_method`, `fio` — the methods compared;
//! * `child` — each in-process point runs in a fresh child process;
//! * `data` — the data file, its read and write regions and its page-cache residency;
//! * `pattern`, `verify` — what every block holds, and `--verify`'s checks of every operation;
//! * `runner` — the plan, repetitions and eviction handling;
//! * `table`, `targets` — the markdown report, and issue 15's goals met or missed.

pub mod args;
pub mod child;
pub mod data;
pub mod fio;
pub mod measure;
pub mod mio_method;
pub mod pattern;
pub mod runner;
pub mod spec;
pub mod table;
pub mod targets;
pub mod threads_method;
pub mod tokio_method;
pub mod verify;
