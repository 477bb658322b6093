//! The batch bookkeeping against a table of what FreeBSD's `kern_lio_listio` and `aio_aqueue`
//! do (see the module documentation). These run on every OS.

use nix::errno::Errno;

use super::*;

const INPROGRESS: i64 = Errno::EINPROGRESS as i64;
const AGAIN: i64 = Errno::EAGAIN as i64;
const BADF: i64 = Errno::EBADF as i64;

/// One kernel behaviour: what `lio_listio` returned and each entry's error word after it, what
/// the entries are, the outcome, and whether the backend must post the event itself.
struct Case {
    what: &'static str,
    call: Result<(), Errno>,
    words: &'static [i64],
    entries: &'static [Entry],
    outcome: Outcome,
    stand_in: bool,
}

const TABLE: &[Case] = &[
    Case {
        what: "every entry queued: lio_listio returns 0",
        call: Ok(()),
        words: &[INPROGRESS, INPROGRESS],
        entries: &[Entry::Accepted, Entry::Accepted],
        outcome: Outcome::Ok,
        stand_in: false,
    },
    Case {
        what: "queue full after the first entry: EAGAIN, the rest refused",
        call: Err(Errno::EAGAIN),
        words: &[INPROGRESS, AGAIN, AGAIN],
        entries: &[Entry::Accepted, Entry::Refused, Entry::Refused],
        outcome: Outcome::Incomplete,
        stand_in: false,
    },
    Case {
        what: "queue full from the start: EAGAIN, nothing queued, no event promised",
        call: Err(Errno::EAGAIN),
        words: &[AGAIN, AGAIN],
        entries: &[Entry::Refused, Entry::Refused],
        outcome: Outcome::Again,
        stand_in: false,
    },
    Case {
        what: "a bad fd beside a good entry: EIO, the kernel's event comes",
        call: Err(Errno::EIO),
        words: &[INPROGRESS, BADF],
        entries: &[Entry::Accepted, Entry::Failed(Errno::EBADF)],
        outcome: Outcome::Io,
        stand_in: false,
    },
    Case {
        what: "only a bad fd: EIO, nothing queued, the backend posts the event",
        call: Err(Errno::EIO),
        words: &[BADF],
        entries: &[Entry::Failed(Errno::EBADF)],
        outcome: Outcome::Io,
        stand_in: true,
    },
    Case {
        what: "failed, refused and queued at once: EIO wins, EAGAIN stays in the statuses",
        call: Err(Errno::EIO),
        words: &[BADF, AGAIN, INPROGRESS],
        entries: &[Entry::Failed(Errno::EBADF), Entry::Refused, Entry::Accepted],
        outcome: Outcome::Io,
        stand_in: false,
    },
    Case {
        what: "an entry queued that already failed when the call returned EIO: still accepted \
               (its control block keeps EINPROGRESS until aio_return), so no second event",
        call: Err(Errno::EIO),
        words: &[INPROGRESS, BADF],
        entries: &[Entry::Accepted, Entry::Failed(Errno::EBADF)],
        outcome: Outcome::Io,
        stand_in: false,
    },
    Case {
        what: "a refusal that stores no error (aio_nbytes too large) reads as EINVAL",
        call: Err(Errno::EIO),
        words: &[0],
        entries: &[Entry::Failed(Errno::EINVAL)],
        outcome: Outcome::Io,
        stand_in: true,
    },
    Case {
        what: "the call refused as a whole (too many entries): no entry looked at",
        call: Err(Errno::EINVAL),
        words: &[0, 0],
        entries: &[Entry::Failed(Errno::EINVAL), Entry::Failed(Errno::EINVAL)],
        outcome: Outcome::Io,
        stand_in: true,
    },
    Case {
        what: "the batch's kevent could not be registered (a closed kqueue)",
        call: Err(Errno::EBADF),
        words: &[0],
        entries: &[Entry::Failed(Errno::EBADF)],
        outcome: Outcome::Io,
        stand_in: true,
    },
];

#[test]
fn kernel_behaviours() {
    for case in TABLE {
        let entries: Vec<Entry> = case.words.iter().map(|&w| classify(case.call, w)).collect();
        assert_eq!(entries, case.entries, "{}", case.what);
        let accepted = entries.iter().filter(|&&e| e == Entry::Accepted).count();
        let states: Vec<State> = entries.iter().map(|&e| State::from(e)).collect();
        let outcome = outcome(states.iter().copied(), accepted);
        assert_eq!(outcome, case.outcome, "{}", case.what);
        assert_eq!(
            needs_stand_in(outcome, accepted),
            case.stand_in,
            "{}",
            case.what
        );
        // Only accepted entries owe an aio_return (and are what a second submit refuses).
        for (s, e) in states.iter().zip(&entries) {
            assert_eq!(s.started(), *e == Entry::Accepted, "{}", case.what);
            assert_eq!(s.result().is_none(), *e == Entry::Accepted, "{}", case.what);
        }
    }
}

#[test]
fn resubmit_restarts_only_the_refused() {
    // After "failed, refused and queued at once".
    let states = [
        State::Rejected(Errno::EBADF),
        State::Again,
        State::Kernel,
        State::Nop,
        State::Done(Ok(3)),
    ];
    let restarted: Vec<bool> = states.iter().map(|s| s.to_start()).collect();
    assert_eq!(restarted, [false, true, false, false, false]);
    let statuses: Vec<_> = states
        .iter()
        .map(|s| s.status(|| Err(Errno::EINPROGRESS)))
        .collect();
    assert_eq!(
        statuses,
        [
            Err(Errno::EBADF),
            Err(Errno::EAGAIN),
            Err(Errno::EINPROGRESS),
            Ok(()),
            Ok(())
        ]
    );
    // The resubmission queues the refused entry: the failure is still reported.
    let after = [
        State::Rejected(Errno::EBADF),
        State::Kernel,
        State::Kernel,
        State::Nop,
        State::Done(Ok(3)),
    ];
    assert_eq!(outcome(after, 1), Outcome::Io);
    assert!(!needs_stand_in(Outcome::Io, 1));
}

#[test]
fn a_batch_larger_than_the_per_process_limit_goes_in_rounds() {
    // vfs.aio.max_aio_queue_per_proc defaults to 256; 300 entries: 256, then 44.
    let limit = 256;
    let mut states = vec![State::Fresh; 300];
    let mut rounds = Vec::new();
    loop {
        let pending: Vec<usize> = (0..states.len())
            .filter(|&i| states[i].to_start())
            .collect();
        if pending.is_empty() {
            break;
        }
        let n = round_len(pending.len(), limit);
        for (k, &i) in pending.iter().enumerate() {
            // The kernel queues the round; the entries left out wait for the next one.
            states[i] = if k < n { State::Kernel } else { State::Again };
        }
        let out = outcome(states.iter().copied(), n);
        rounds.push((n, out));
        // The round completes and `resubmit` collects it before the next.
        for s in states.iter_mut().filter(|s| **s == State::Kernel) {
            *s = State::Done(Ok(512));
        }
    }
    assert_eq!(rounds, [(256, Outcome::Incomplete), (44, Outcome::Ok)]);
    assert!(states.iter().all(|s| *s == State::Done(Ok(512))));
    assert_eq!(round_len(10, 256), 10);
    // A limit of 0: nothing can be handed over, which reads as a full queue.
    assert_eq!(round_len(10, 0), 0);
    assert_eq!(outcome(vec![State::Again; 10], 0), Outcome::Again);
}

#[test]
fn nothing_for_the_kernel_still_gets_an_event() {
    // Empty, all LIO_NOP, or all refused before the kernel: no lio_listio, no kernel event.
    for states in [vec![], vec![State::Nop, State::Nop]] {
        let out = outcome(states, 0);
        assert_eq!(out, Outcome::Ok);
        assert!(needs_stand_in(out, 0));
    }
    let out = outcome([State::Rejected(Errno::EINVAL)], 0);
    assert_eq!(out, Outcome::Io);
    assert!(needs_stand_in(out, 0));
}

#[test]
fn results_of_entries_the_kernel_no_longer_holds() {
    assert_eq!(State::Fresh.result(), Some(Err(Errno::EINVAL)));
    assert_eq!(State::Again.result(), Some(Err(Errno::EAGAIN)));
    assert_eq!(State::Nop.result(), Some(Ok(0)));
    assert_eq!(
        State::Rejected(Errno::EBADF).result(),
        Some(Err(Errno::EBADF))
    );
    assert_eq!(State::Done(Ok(7)).result(), Some(Ok(7)));
    assert_eq!(State::Kernel.result(), None);
}

#[test]
fn a_waiting_caller_resubmits_refused_entries_even_beside_failures() {
    let eio_with_refused = Err(LioError::EIO(vec![Err(Errno::EBADF), Err(Errno::EAGAIN)]));
    let eio_without = Err(LioError::EIO(vec![Err(Errno::EBADF), Ok(())]));
    assert_eq!(next_step(&eio_with_refused, true), Next::Resubmit);
    // Nothing running: no event will come, so retry after a yield rather than wait.
    assert_eq!(next_step(&eio_with_refused, false), Next::RetryLater);
    assert_eq!(next_step(&eio_without, true), Next::Collect);
    assert_eq!(next_step(&Ok(()), true), Next::Collect);
    assert_eq!(next_step(&Err(LioError::EINCOMPLETE), true), Next::Resubmit);
    assert_eq!(next_step(&Err(LioError::EAGAIN), false), Next::RetryLater);
    // An earlier round still runs: its event comes, then there may be room.
    assert_eq!(next_step(&Err(LioError::EAGAIN), true), Next::Resubmit);
}

#[test]
fn outcome_as_the_public_error() {
    assert_eq!(Outcome::Ok.into_result(Vec::new), Ok(()));
    assert_eq!(Outcome::Again.into_result(Vec::new), Err(LioError::EAGAIN));
    assert_eq!(
        Outcome::Incomplete.into_result(Vec::new),
        Err(LioError::EINCOMPLETE)
    );
    assert_eq!(
        Outcome::Io.into_result(|| vec![Err(Errno::EBADF)]),
        Err(LioError::EIO(vec![Err(Errno::EBADF)]))
    );
}
