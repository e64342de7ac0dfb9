//! `DistributedDict`: the original Python Zatt's client, in Rust. A map-like value whose reads
//! are served from a local copy of the whole dictionary, refreshed from the cluster according to
//! a [`RefreshPolicy`]; whose writes always go to the cluster (and update the local copy at
//! once). Owns the local copy and the refresh decision; talking to the cluster is [`Client`]'s.
//!
//! A refresh reloads the *whole* dictionary (a scan in pages), as the original did: meant for
//! small dictionaries of configuration-like data, read often and written rarely. Refreshes use
//! stale reads by default (served by whichever server the client is connected to, no leader
//! round; `with_refresh_consistency` makes them linearizable), but never go back in time: a
//! refresh answered by a server that has not yet applied this dict's own last write (or the
//! state of its previous refresh) is redone linearizably.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Client, ClientConfig, Consistency, Error, Expect, Result, ScanOptions, Status};

/// When a [`DistributedDict`] reloads its local copy. Checked on every read (`get`,
/// `contains_key`, `len`, `iter`, `keys`); writes never refresh.
#[derive(Clone, Debug, Default)]
pub enum RefreshPolicy {
    /// Before every read: reads see every write acknowledged before them (default).
    #[default]
    Always,
    /// Before every read while the lock is set; while it is clear the copy stays frozen, so a
    /// batch of reads sees one consistent state.
    Lock(RefreshLock),
    /// Once every `n` reads: the copy serves at most `n` reads per refresh (`Count(1)` is
    /// `Always`; `Count(0)` is treated as 1).
    Count(u64),
    /// When the copy is older than this.
    Time(Duration),
}

/// The switch of [`RefreshPolicy::Lock`]: while set, reads refresh. Cloning shares the switch,
/// so another thread (or the application's main loop) can flip it.
#[derive(Clone, Debug, Default)]
pub struct RefreshLock(Arc<AtomicBool>);

impl RefreshLock {
    pub fn new(set: bool) -> RefreshLock {
        RefreshLock(Arc::new(AtomicBool::new(set)))
    }
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A membership change for [`DistributedDict::config_cluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterChange {
    /// Add server `id` at `addr` (`host:port`): the leader adds it as a learner and promotes it
    /// to voter once it has caught up; the call returns then (or at the client's timeout).
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
}

/// The local copy: key → value.
type LocalCopy = BTreeMap<Vec<u8>, Vec<u8>>;

/// A map-like view of the cluster's dictionary with a local copy (see the module docs).
///
/// ```
/// # fn main() -> Result<(), zatt::client::Error> {
/// # let (endpoint, _server) = zatt::client::example_server();
/// use zatt::client::{ClientConfig, DistributedDict, RefreshPolicy};
///
/// let mut d = DistributedDict::connect(&[endpoint], ClientConfig::default())?;
/// d.insert("colour", "blue")?;
/// assert_eq!(d.get("colour")?, Some(&b"blue"[..]));
/// assert!(d.contains_key("colour")?);
/// assert_eq!(d.len()?, 1);
/// println!("{d:?}"); // {"colour": "blue"}
///
/// // Refresh at most every 10 reads instead of before each one.
/// d.set_policy(RefreshPolicy::Count(10));
/// let keys: Vec<Vec<u8>> = d.keys()?.map(|k| k.to_vec()).collect();
/// assert_eq!(keys, vec![b"colour".to_vec()]);
/// d.remove("colour")?;
/// # Ok(())
/// # }
/// ```
pub struct DistributedDict {
    client: Client,
    local: LocalCopy,
    policy: RefreshPolicy,
    /// Whether `local` has ever been loaded.
    loaded: bool,
    /// Reads served since the last refresh (for `Count`).
    reads_since_refresh: u64,
    last_refresh: Option<Instant>,
    /// The log position the local copy must not fall behind: the highest of this dict's own
    /// write revisions and the applied index of its last refresh.
    floor_index: u64,
    refreshes: u64,
    /// How refreshes read: stale by default (see the module docs).
    refresh_consistency: Consistency,
}

impl DistributedDict {
    /// Connects with the default policy ([`RefreshPolicy::Always`]).
    pub fn connect<S: AsRef<str>>(endpoints: &[S], config: ClientConfig) -> Result<Self> {
        Ok(Self::from_client(Client::connect(endpoints, config)?))
    }

    pub fn from_client(client: Client) -> Self {
        DistributedDict {
            client,
            local: BTreeMap::new(),
            policy: RefreshPolicy::Always,
            loaded: false,
            reads_since_refresh: 0,
            last_refresh: None,
            floor_index: 0,
            refreshes: 0,
            refresh_consistency: Consistency::Stale,
        }
    }

    pub fn with_policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Makes refreshes linearizable (`Consistency::Linearizable`: a refresh then reflects every
    /// write acknowledged before it, by anyone, at the cost of a round through the leader) or
    /// stale (the default).
    pub fn with_refresh_consistency(mut self, consistency: Consistency) -> Self {
        self.refresh_consistency = consistency;
        self
    }

    pub fn set_policy(&mut self, policy: RefreshPolicy) {
        self.policy = policy;
        self.reads_since_refresh = 0;
    }

    pub fn policy(&self) -> &RefreshPolicy {
        &self.policy
    }

    /// How many times the local copy has been reloaded.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes
    }

    /// The client underneath, for operations the map view does not offer.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The local copy as it is, without refreshing.
    pub fn local(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.local
    }

    /// Reloads the whole local copy from the cluster now, whatever the policy.
    pub fn refresh(&mut self) -> Result<()> {
        let floor = self.floor_index;
        let (map, applied) = self.load(self.refresh_consistency)?;
        let (map, applied) = if applied < floor && self.refresh_consistency == Consistency::Stale {
            // The answering server lags behind what this dict has already seen.
            self.load(Consistency::Linearizable)?
        } else {
            (map, applied)
        };
        self.local = map;
        self.floor_index = self.floor_index.max(applied);
        self.loaded = true;
        self.reads_since_refresh = 0;
        self.last_refresh = Some(Instant::now());
        self.refreshes += 1;
        Ok(())
    }

    fn load(&mut self, consistency: Consistency) -> Result<(LocalCopy, u64)> {
        let mut map = BTreeMap::new();
        let mut applied = u64::MAX;
        let mut pages = self.client.scan_with(ScanOptions {
            consistency,
            ..ScanOptions::default()
        });
        while let Some(page) = pages.next() {
            for kv in page? {
                map.insert(kv.key, kv.value);
            }
            // A multi-page load is only as fresh as its oldest page.
            applied = applied.min(pages.applied_index());
        }
        if applied == u64::MAX {
            applied = 0;
        }
        Ok((map, applied))
    }

    /// Applies the policy before a read.
    fn before_read(&mut self) -> Result<()> {
        let due = !self.loaded
            || match &self.policy {
                RefreshPolicy::Always => true,
                RefreshPolicy::Lock(lock) => lock.is_set(),
                RefreshPolicy::Count(n) => self.reads_since_refresh >= (*n).max(1),
                RefreshPolicy::Time(age) => self.last_refresh.map_or(true, |t| t.elapsed() >= *age),
            };
        if due {
            self.refresh()?;
        }
        self.reads_since_refresh += 1;
        Ok(())
    }

    // ----- reads (from the local copy, refreshed per the policy) --------------------------

    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<&[u8]>> {
        self.before_read()?;
        Ok(self.local.get(key.as_ref()).map(|v| v.as_slice()))
    }

    pub fn contains_key(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.before_read()?;
        Ok(self.local.contains_key(key.as_ref()))
    }

    pub fn len(&mut self) -> Result<usize> {
        self.before_read()?;
        Ok(self.local.len())
    }

    pub fn is_empty(&mut self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The entries in key order.
    pub fn iter(&mut self) -> Result<impl Iterator<Item = (&[u8], &[u8])>> {
        self.before_read()?;
        Ok(self.local.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    pub fn keys(&mut self) -> Result<impl Iterator<Item = &[u8]>> {
        self.before_read()?;
        Ok(self.local.keys().map(|k| k.as_slice()))
    }

    // ----- writes (always to the cluster) --------------------------------------------------

    /// Sets `key` to `value` in the cluster; returns the previous value in the local copy.
    pub fn insert(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>> {
        let revision = self.client.put(key.as_ref(), value.as_ref())?;
        self.floor_index = self.floor_index.max(revision);
        Ok(self
            .local
            .insert(key.as_ref().to_vec(), value.as_ref().to_vec()))
    }

    /// Removes `key` from the cluster; returns the previous value in the local copy.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let (_, revision) = self.client.delete_with_revision(key.as_ref())?;
        self.floor_index = self.floor_index.max(revision);
        Ok(self.local.remove(key.as_ref()))
    }

    /// Compare-and-swap in the cluster (see [`Client::cas`]). Updates the local copy either
    /// way: with the new value on success, with the current one on [`Error::CasFailed`].
    pub fn cas(
        &mut self,
        key: impl AsRef<[u8]>,
        expect: Expect,
        new: Option<Vec<u8>>,
    ) -> Result<()> {
        let revision = match self.client.cas(key.as_ref(), expect, new.clone()) {
            Ok(r) => r,
            Err(Error::CasFailed { current }) => {
                // The cluster told us what is there: the local copy learns it too.
                match &current {
                    Some((v, rev)) => {
                        self.local.insert(key.as_ref().to_vec(), v.clone());
                        self.floor_index = self.floor_index.max(*rev);
                    }
                    None => {
                        self.local.remove(key.as_ref());
                    }
                }
                return Err(Error::CasFailed { current });
            }
            Err(e) => return Err(e),
        };
        self.floor_index = self.floor_index.max(revision);
        match new {
            Some(v) => self.local.insert(key.as_ref().to_vec(), v),
            None => self.local.remove(key.as_ref()),
        };
        Ok(())
    }

    // ----- the cluster -----------------------------------------------------------------------

    /// The status of the server the dict is connected to (the original's `diagnostic()`).
    pub fn diagnostic(&mut self) -> Result<Status> {
        self.client.status()
    }

    /// Adds or removes a server (the original's `config_cluster('add'|'remove', ...)`).
    pub fn config_cluster(&mut self, change: ClusterChange) -> Result<()> {
        match change {
            ClusterChange::Remove { id } => self.client.member_remove(id),
            // The leader adds it as a learner and promotes it once caught up.
            ClusterChange::Add { id, addr } => self.client.member_add(id, &addr, false),
        }
    }
}

/// Prints the local copy as a map, values as text where they are UTF-8.
impl fmt::Debug for DistributedDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.local.iter().map(|(k, v)| (Text(k), Text(v))))
            .finish()
    }
}

struct Text<'a>(&'a [u8]);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}
