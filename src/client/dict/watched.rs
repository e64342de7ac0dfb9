//! [`RefreshPolicy::Watch`](super::RefreshPolicy::Watch) for the [`DistributedDict`]: one load
//! of the whole dictionary, then a watch on every key from the revision after it, each change
//! applied to the local copy in revision order as reads take up what has arrived. Owns the
//! load-then-watch sequence, the wait that gives a dict its own writes, the `on_change` hooks,
//! and the reload after `Compacted`. Must not: let the copy show a state the cluster never had
//! at one revision (a load of several pages is caught up to its newest page before any read),
//! move the copy back in time (a reload is linearizable: at least as recent as everything the
//! stream brought), or call a hook twice for one change.

use std::time::Instant;

use super::{DistributedDict, LocalCopy};
use crate::client::{Consistency, Error, Result, Watch, WatchEvent, WatchOptions};

pub(super) struct Watched {
    watch: Watch,
}

/// Applies one change to the copy.
fn apply(local: &mut LocalCopy, e: &WatchEvent) {
    match e {
        WatchEvent::Put { key, value, .. } => {
            local.insert(key.clone(), value.clone());
        }
        WatchEvent::Delete { key, .. } => {
            local.remove(key);
        }
    }
}

impl DistributedDict {
    /// Registers `hook`, called with each change the local copy takes from the cluster under
    /// [`RefreshPolicy::Watch`](super::RefreshPolicy::Watch): once per change, in revision
    /// order, on the thread that reads or writes the dict, during that call (a read takes up
    /// the changes that have arrived and calls the hooks before it answers). Hooks see the
    /// changes made after the dict's load; when the dict has to load again (the servers no
    /// longer kept the changes since its copy), they see the differences between the old copy
    /// and the new one, each with the revision of the new load. [`poll`](Self::poll) takes up
    /// changes without reading.
    pub fn on_change(&mut self, hook: impl FnMut(&WatchEvent) + Send + 'static) {
        self.on_change.push(Box::new(hook));
    }

    /// Makes the change stream of [`RefreshPolicy::Watch`](super::RefreshPolicy::Watch) go to
    /// this server first (`host:port`; any member serves it, followers included) instead of
    /// one of the client's endpoints picked at random; it moves to another when that one
    /// fails. Takes effect at the next load.
    pub fn with_watch_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.watch_endpoint = Some(endpoint.into());
        self
    }

    /// The server the change stream is connected to now, if any.
    pub fn watch_connected_to(&self) -> Option<&str> {
        self.watched.as_ref().and_then(|w| w.watch.connected_to())
    }

    /// Takes up the changes that have arrived (calling the hooks) without reading, under
    /// [`RefreshPolicy::Watch`](super::RefreshPolicy::Watch); returns how many.
    pub fn poll(&mut self) -> Result<usize> {
        if !matches!(self.policy, super::RefreshPolicy::Watch) {
            return Ok(0);
        }
        self.watch_sync()
    }

    /// The revision the local copy stands for under
    /// [`RefreshPolicy::Watch`](super::RefreshPolicy::Watch): it is the dictionary's state as
    /// of that revision. `None` before the first load, or under another policy.
    pub fn revision(&self) -> Option<u64> {
        self.watched.as_ref().map(|w| w.watch.revision())
    }

    /// Loads the copy linearizably, starts watching from the revision after the load, and
    /// brings the copy to one revision; on a reload, tells the hooks what changed.
    pub(super) fn watch_load(&mut self) -> Result<()> {
        self.watched = None;
        let began = Instant::now();
        let deadline = began + self.client.config().timeout;
        let (map, watch, high) = loop {
            match self.load_and_watch(deadline) {
                // The server the watch reached no longer keeps the changes since the load (it
                // installed a newer snapshot meanwhile, or that many changes came during a
                // long load): load again, within the client's timeout.
                Err(Error::Compacted { oldest }) if Instant::now() < deadline => {
                    log::debug!("dict: changes since the load no longer kept ({oldest}); again");
                }
                r => break r?,
            }
        };
        let reload = self.loaded;
        let old = std::mem::replace(&mut self.local, map);
        if reload {
            self.tell_differences(&old, watch.revision());
        }
        self.watched = Some(Watched { watch });
        self.mark_loaded(began, high);
        Ok(())
    }

    /// One load and a watch from after it, the copy brought to the newest page's revision:
    /// the copy, the watch, and that revision.
    fn load_and_watch(&mut self, deadline: Instant) -> Result<(LocalCopy, Watch, u64)> {
        // Every page is read at its own revision (`low` for the first, rising): the watch
        // starts after the lowest and the copy is exposed only once it has reached the
        // highest. Changes after a page's revision applied over it in order leave each key as
        // it was at that point, which is why they are applied as they come, blindly.
        let (mut map, low, high) = self.load(Consistency::Linearizable)?;
        let mut opts = WatchOptions::new(b"", low + 1);
        opts.endpoint = self.watch_endpoint.clone();
        let mut watch = self.client.watch_with(opts)?;
        while watch.revision() < high {
            match watch.next_until(deadline)? {
                Some(e) => apply(&mut map, &e),
                None => {
                    return Err(Error::Timeout {
                        may_have_applied: false,
                    })
                }
            }
        }
        Ok((map, watch, high))
    }

    /// The hooks learn what a reload changed: puts for keys new or changed, deletes for keys
    /// gone, at the revision of the load.
    fn tell_differences(&mut self, old: &LocalCopy, revision: u64) {
        if self.on_change.is_empty() {
            return;
        }
        let mut events = Vec::new();
        for (k, v) in &self.local {
            if old.get(k) != Some(v) {
                events.push(WatchEvent::Put {
                    key: k.clone(),
                    value: v.clone(),
                    revision,
                });
            }
        }
        for k in old.keys() {
            if !self.local.contains_key(k) {
                events.push(WatchEvent::Delete {
                    key: k.clone(),
                    revision,
                });
            }
        }
        for e in &events {
            for hook in &mut self.on_change {
                hook(e);
            }
        }
    }

    /// Before a read: waits until the copy has reached this dict's own last write, then takes
    /// up every change that has arrived. Returns how many changes it applied.
    pub(super) fn watch_sync(&mut self) -> Result<usize> {
        if self.watched.is_none() {
            self.watch_load()?;
        }
        let deadline = Instant::now() + self.client.config().timeout;
        let floor = self.floor_index;
        let mut applied = 0;
        loop {
            let Some(w) = self.watched.as_mut() else {
                return Ok(applied);
            };
            let reached = w.watch.revision() >= floor || w.watch.wait_for(floor, deadline)?;
            let mut compacted = false;
            loop {
                match w.watch.try_next() {
                    Ok(Some(e)) => {
                        apply(&mut self.local, &e);
                        for hook in &mut self.on_change {
                            hook(&e);
                        }
                        applied += 1;
                    }
                    Ok(None) => break,
                    Err(Error::Compacted { .. }) => {
                        compacted = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if compacted {
                // The servers no longer keep what the copy needs next: load again.
                self.watch_load()?;
                continue;
            }
            if !reached {
                return Err(Error::Timeout {
                    may_have_applied: false,
                });
            }
            return Ok(applied);
        }
    }
}
