//! Linux: the driver's settings are set from code before the first operation, read back, and
//! fixed once the driver is in use. Each test runs in a child process of its own, because the
//! settings belong to the process.
#![cfg(target_os = "linux")]

mod support;

use std::{io::ErrorKind, os::fd::AsFd};

use mio_aio::{Backend, Config, LioCbBuilder, LioError, LioOpcode};

/// What the program sets wins over the environment; what it does not set keeps the
/// environment's value; everything reads back, and nothing changes once in use.
#[test]
fn settings_from_code_and_environment_read_back() {
    support::in_child(
        "settings_from_code_and_environment_read_back",
        &[("MIO_AIO_THREADS", "5"), ("MIO_AIO_MAX_IN_FLIGHT", "77")],
        || {
            let before = mio_aio::config().unwrap();
            assert_eq!(before.max_threads(), 5, "from MIO_AIO_THREADS");
            assert_eq!(before.max_in_flight(), 77, "from MIO_AIO_MAX_IN_FLIGHT");
            let cached = std::env::var("MIO_AIO_CACHED_READS").map_or(true, |v| v != "0");
            assert_eq!(before.cached_reads(), cached);

            Config::builder()
                .max_in_flight(3)
                .uring_async(true)
                .install()
                .unwrap();
            let set = mio_aio::config().unwrap();
            assert_eq!(set.max_in_flight(), 3, "code wins over the environment");
            assert!(set.uring_async());
            assert_eq!(set.max_threads(), 5, "not set from code: the environment's");

            let backend = mio_aio::backend().unwrap();
            let in_use = mio_aio::config().unwrap();
            assert_eq!(
                in_use.backend(),
                Some(backend),
                "the backend chosen reads back"
            );
            assert_eq!(in_use.max_in_flight(), 3);

            // Fixed once in use: the same settings are accepted, others refused.
            Config::builder().max_in_flight(3).install().unwrap();
            mio_aio::set_backend(backend).unwrap();
            let err = Config::builder().max_in_flight(4).install().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
            let other = if backend == Backend::ThreadPool {
                Backend::KernelAio
            } else {
                Backend::ThreadPool
            };
            let err = mio_aio::set_backend(other).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
            assert_eq!(mio_aio::config().unwrap().max_in_flight(), 3);

            // And the limit set from code is the one the driver enforces: of five writes,
            // three start.
            let f = tempfile::tempfile().unwrap();
            let data = [7u8; 512];
            let mut builder = LioCbBuilder::with_capacity(5);
            for i in 0..5 {
                builder = builder.emplace_slice(f.as_fd(), 512 * i, &data, 0, LioOpcode::LIO_WRITE);
            }
            let mut batch = builder.finish();
            assert_eq!(batch.submit(), Err(LioError::EINCOMPLETE));
            let started =
                batch.into_results(|results| results.filter(|r| r.result == Ok(512)).count());
            assert_eq!(started, 3);
        },
    );
}

/// A backend name that does not exist is reported by `config`, not ignored.
#[test]
fn unknown_backend_name_is_an_error() {
    support::in_child(
        "unknown_backend_name_is_an_error",
        &[("MIO_AIO_BACKEND", "bogus")],
        || {
            let err = mio_aio::config().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("MIO_AIO_BACKEND"), "{err}");
        },
    );
}
