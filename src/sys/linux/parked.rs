//! Parked notifiers: eventfds of finished operations left in the epoll set they were added to,
//! ready to be retargeted to a new token with one `EPOLL_CTL_MOD`.
//!
//! They are filed under the number of the epoll fd they were added through, and a number can
//! name another epoll set once the `Poll` (or registry clone) that held it is closed. What keeps
//! that from aliasing: a pooled eventfd is only ever `EPOLL_CTL_ADD`ed while it is in no set, so
//! it is in at most one, and epoll identifies it by the (eventfd, number) pair that the pool
//! keeps open. A `MOD` through the filed number that succeeds therefore proves the number still
//! names the set it is in; `ENOENT` (the number names another set), or `EBADF`/`EINVAL` (it is
//! closed, or names another kind of file), proves the entry stale, and the whole list filed
//! under that number is closed, never added anywhere else. Closing an eventfd takes it out of
//! its set.
//!
//! A `Poll` that goes away leaves its parked eventfds behind until something looks: a list is
//! checked whenever a number not filed yet turns up (a new `Poll`), when the global bound is
//! reached (at most once per [`PARKED_MAX`] parkings refused there), and when its number is
//! used again; and the pool gives every eventfd back when the process runs out of descriptors.

use std::os::fd::RawFd;

/// The most notifiers parked at once, for all epoll sets together; more are closed. Enough for
/// a loop that replaces finished operations with new ones at a depth of a few hundred.
pub(crate) const PARKED_MAX: usize = 256;

/// The parked notifiers (`T`), filed under epoll fd numbers.
#[derive(Debug)]
pub(crate) struct Parked<T> {
    /// A list per epoll fd number: few (one per `Poll` or registry clone in use), so searched
    /// in order.
    lists: Vec<(RawFd, Vec<T>)>,
    total: usize,
    /// Parkings refused at the bound since the lists were last checked.
    refused: usize,
}

impl<T> Default for Parked<T> {
    fn default() -> Self {
        Parked {
            lists: Vec::new(),
            total: 0,
            refused: 0,
        }
    }
}

impl<T> Parked<T> {
    /// Files `n`, which is in the epoll set `epfd` names, unless the bound is reached; returns
    /// what must be closed (stale lists, or `n` itself). `still_there(epfd, n)` retargets a
    /// parked notifier through `epfd`, and says whether that worked.
    #[must_use]
    pub(crate) fn park(
        &mut self,
        epfd: RawFd,
        n: T,
        still_there: impl Fn(RawFd, &T) -> bool,
    ) -> Vec<T> {
        let mut closing = Vec::new();
        let new_number = self.list(epfd).is_none();
        if new_number || (self.total >= PARKED_MAX && self.refused >= PARKED_MAX) {
            closing = self.drop_stale(epfd, still_there);
            self.refused = 0;
        }
        if self.total < PARKED_MAX {
            match self.list(epfd) {
                Some(list) => list.push(n),
                None => self.lists.push((epfd, vec![n])),
            }
            self.total += 1;
        } else {
            self.refused += 1;
            closing.push(n);
        }
        closing
    }

    /// The last notifier parked under `epfd`, unchecked.
    pub(crate) fn unpark(&mut self, epfd: RawFd) -> Option<T> {
        let n = self.list(epfd)?.pop()?;
        self.total -= 1;
        Some(n)
    }

    /// Takes out the list of a number found stale.
    #[must_use]
    pub(crate) fn forget(&mut self, epfd: RawFd) -> Vec<T> {
        let Some(i) = self.lists.iter().position(|(e, _)| *e == epfd) else {
            return Vec::new();
        };
        let (_, list) = self.lists.swap_remove(i);
        self.total -= list.len();
        list
    }

    fn list(&mut self, epfd: RawFd) -> Option<&mut Vec<T>> {
        (self.lists.iter_mut())
            .find(|(e, _)| *e == epfd)
            .map(|(_, list)| list)
    }

    /// Takes out every list (other than `keep`'s) whose number no longer names its set,
    /// checking one notifier of each.
    fn drop_stale(&mut self, keep: RawFd, still_there: impl Fn(RawFd, &T) -> bool) -> Vec<T> {
        let stale: Vec<RawFd> = (self.lists.iter())
            .filter(|(epfd, list)| {
                *epfd != keep && list.last().is_some_and(|n| !still_there(*epfd, n))
            })
            .map(|&(epfd, _)| epfd)
            .collect();
        stale
            .into_iter()
            .flat_map(|epfd| self.forget(epfd))
            .collect()
    }
}
