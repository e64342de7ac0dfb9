//! `DistributedDict`: the original Python Zatt's client, in Rust. A map-like value whose reads
//! are served from a local copy of the whole dictionary, refreshed from the cluster according to
//! a [`RefreshPolicy`]; whose writes always go to the cluster (and update the local copy at
//! once). Owns the local copy and the refresh decision; talking to the cluster is [`Client`]'s.
//!
//! A refresh reloads the *whole* dictionary (a scan in pages), as the original did: meant for
//! small dictionaries of configuration-like data, read often and written rarely. With
//! [`RefreshPolicy::Watch`] the dict loads once and then stays current from the cluster's
//! change stream alone (`dict/watched.rs`), which suits larger dictionaries and many readers.
//! What each policy guarantees a read is spelled out on [`RefreshPolicy`]; a client in another
//! language that mirrors this type must keep those semantics.

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Client, ClientConfig, Consistency, Error, Escaped, Expect, Result, ScanOptions, Status,
    WatchEvent,
};

mod watched;

/// When a [`DistributedDict`] reloads its local copy from the cluster. Checked before every
/// read (`get`, `contains_key`, `len`, `is_empty`, `iter`, `keys`); writes never refresh.
///
/// # What a read sees
/// A *refresh* reloads the whole dictionary. It is **linearizable** by default: it is served
/// through the leader and reflects every write the cluster acknowledged, to any client, before
/// the refresh began. (A dictionary larger than one scan page, `ClientConfig::scan_page_size`
/// keys, is loaded page by page: each key's value is linearizable, the copy as a whole is not
/// one snapshot.) With [`DistributedDict::with_refresh_consistency`]`(Consistency::Stale)` a
/// refresh is served by the connected server alone, without a round through the leader; it is
/// cheaper and works while there is no leader, but it may miss writes other clients had
/// already seen acknowledged, by as much as that server lags.
///
/// Whatever the policy and the refresh consistency, every read also:
/// - sees this dict's own acknowledged writes (`insert`, `remove`, `cas` update the local copy
///   as soon as the cluster acknowledges them; under `Watch` the next read waits until the
///   change stream has brought them, in their place among other clients' changes);
/// - never goes back in time: a refresh that would show an older state than this dict has
///   already shown (its last refresh, or its own last write) is redone linearizably.
///
/// The policies then say how fresh the copy is at each read:
/// - [`Always`](RefreshPolicy::Always) (the default): every read refreshes first, so with
///   linearizable refreshes **every read reflects every write acknowledged before the read
///   began**: a linearizable read per key, at the cost of loading the whole dictionary per read.
/// - [`Lock`](RefreshPolicy::Lock): as `Always` while the lock is set; while it is clear the
///   copy stays frozen at its last refresh (plus this dict's own writes), so a batch of reads
///   sees one state, and misses everything other clients write meanwhile.
/// - [`Count(n)`](RefreshPolicy::Count): a refresh, then at most `n` reads from the copy
///   (`Count(1)` is `Always`; `Count(0)` counts as 1). A read reflects every write
///   acknowledged before the last refresh began, at most `n - 1` reads earlier.
/// - [`Time(d)`](RefreshPolicy::Time): a read refreshes first when the last refresh began `d`
///   or more ago. A read therefore reflects every write acknowledged at least `d` before it.
/// - [`Watch`](RefreshPolicy::Watch): one load, then the cluster's changes as they are made,
///   applied to the copy in revision order; reads are served from the copy without asking the
///   cluster (they take up the changes that have arrived, a non-blocking look at a socket).
///   Guarantees: **the copy is always the dictionary's state at one revision** (the load's,
///   then each change's), so reads never see half of another client's changes out of order;
///   **reads never go back in time**, through server failures and leader changes too (the
///   change stream resumes on another server from where it was); and **a read sees this
///   dict's own writes**: after `insert`, `remove` or `cas` returns, the next read waits (up
///   to the client's timeout) until the copy has reached that write's revision. Other
///   clients' writes show up as soon as their changes arrive, typically within a millisecond
///   or so of being acknowledged; a read does not wait for them. Hooks registered with
///   [`DistributedDict::on_change`] see each change as the copy takes it. Prefer it to polling
///   for any dictionary read more often than it changes: a refresh costs the whole dictionary,
///   a change costs itself.
///
/// The dict's first read after [`DistributedDict::from_client`] always refreshes;
/// [`DistributedDict::connect`] refreshes before it returns.
#[derive(Clone, Debug, Default)]
pub enum RefreshPolicy {
    /// Refresh before every read (the default).
    #[default]
    Always,
    /// Refresh before every read while the lock is set; frozen while it is clear.
    Lock(RefreshLock),
    /// Refresh, then serve at most this many reads from the copy.
    Count(u64),
    /// Refresh when the last refresh began this long ago or more.
    Time(Duration),
    /// Load once, then follow the cluster's changes (a watch on every key).
    Watch,
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

/// A map-like view of the cluster's dictionary with a local copy (see the module docs and
/// [`RefreshPolicy`] for what each read sees).
///
/// ```
/// # fn main() -> Result<(), zatt::client::Error> {
/// # let (endpoint, _server) = zatt::client::example_server();
/// use zatt::client::{ClientConfig, DistributedDict, Escaped, RefreshPolicy};
///
/// let mut d = DistributedDict::connect(&[endpoint], ClientConfig::default())?;
/// d.insert("colour", "blue")?;
/// d.insert("shape", "round")?;
/// let (colour, shape) = (d.get("colour")?, d.get("shape")?); // owned: hold both
/// assert_eq!(colour.as_deref(), Some(&b"blue"[..]));
/// assert_eq!(shape, Some(b"round".to_vec()));
/// assert!(d.contains_key("colour")?);
/// assert_eq!(d.len()?, 2);
/// println!("{d:?}"); // {"colour": "blue", "shape": "round"}
///
/// // Refresh at most every 10 reads instead of before each one.
/// d.set_policy(RefreshPolicy::Count(10));
/// let keys: Vec<Vec<u8>> = d.keys()?.map(|k| k.to_vec()).collect();
/// assert_eq!(keys, vec![b"colour".to_vec(), b"shape".to_vec()]);
/// // `for` walks the local copy as it is (a loop cannot report a failed refresh).
/// for (key, value) in &d {
///     println!("{} = {}", Escaped(key), Escaped(value)); // colour = blue, shape = round
/// }
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
    /// How refreshes read: linearizable by default (see [`RefreshPolicy`]).
    refresh_consistency: Consistency,
    /// The change stream keeping the copy current, under `RefreshPolicy::Watch`.
    watched: Option<watched::Watched>,
    /// Called with each change the copy takes from the stream (`RefreshPolicy::Watch`).
    on_change: Vec<ChangeHook>,
    /// The server the stream goes to first (`None`: one of the client's, at random).
    watch_endpoint: Option<String>,
}

/// A hook [`DistributedDict::on_change`] registers.
type ChangeHook = Box<dyn FnMut(&WatchEvent) + Send>;

impl DistributedDict {
    /// Connects with the default policy ([`RefreshPolicy::Always`]) and loads the local copy,
    /// so that the dict reflects the cluster from the start (its `Debug` output included).
    pub fn connect<S: AsRef<str>>(endpoints: &[S], config: ClientConfig) -> Result<Self> {
        let mut d = Self::from_client(Client::connect(endpoints, config)?);
        d.refresh()?;
        Ok(d)
    }

    /// A dict over an existing client; the local copy is loaded by the first read (or
    /// [`refresh`](Self::refresh)), and is empty until then.
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
            refresh_consistency: Consistency::Linearizable,
            watched: None,
            on_change: Vec::new(),
            watch_endpoint: None,
        }
    }

    pub fn with_policy(mut self, policy: RefreshPolicy) -> Self {
        self.set_policy(policy);
        self
    }

    /// How refreshes read. `Consistency::Linearizable` (the default): a refresh reflects every
    /// write acknowledged before it began, by anyone, at the cost of a round through the
    /// leader. `Consistency::Stale`: served by the connected server alone, so a refresh may
    /// miss other clients' acknowledged writes by as much as that server lags (never this
    /// dict's own, and never going back in time); see [`RefreshPolicy`].
    pub fn with_refresh_consistency(mut self, consistency: Consistency) -> Self {
        self.refresh_consistency = consistency;
        self
    }

    pub fn set_policy(&mut self, policy: RefreshPolicy) {
        if !matches!(policy, RefreshPolicy::Watch) {
            // The stream stops; the copy stays as it was and is refreshed by the new policy.
            self.watched = None;
        } else if self.watched.is_none() {
            // Loaded and watched from the next read on.
            self.loaded = false;
        }
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

    /// Reloads the whole local copy from the cluster now, whatever the policy (under
    /// [`RefreshPolicy::Watch`], the change stream starts again after the load).
    pub fn refresh(&mut self) -> Result<()> {
        if matches!(self.policy, RefreshPolicy::Watch) {
            return self.watch_load();
        }
        // `Time` measures the copy's age from here: it reflects what was acknowledged before.
        let began = Instant::now();
        let floor = self.floor_index;
        let (map, applied, _) = self.load(self.refresh_consistency)?;
        let (map, applied) = if applied < floor && self.refresh_consistency == Consistency::Stale {
            // The answering server lags behind what this dict has already seen.
            let (map, applied, _) = self.load(Consistency::Linearizable)?;
            (map, applied)
        } else {
            (map, applied)
        };
        self.local = map;
        self.mark_loaded(began, applied);
        Ok(())
    }

    /// The whole dictionary, page by page: the copy, the revision of its oldest page (a
    /// multi-page load is only as fresh as that; 0 when empty) and of its newest.
    fn load(&mut self, consistency: Consistency) -> Result<(LocalCopy, u64, u64)> {
        let mut map = BTreeMap::new();
        let (mut low, mut high) = (u64::MAX, 0u64);
        let mut pages = self.client.scan_with(ScanOptions {
            consistency,
            ..ScanOptions::default()
        });
        while let Some(page) = pages.next() {
            for kv in page? {
                map.insert(kv.key, kv.value);
            }
            low = low.min(pages.applied_index());
            high = high.max(pages.applied_index());
        }
        if low == u64::MAX {
            low = 0;
        }
        Ok((map, low, high))
    }

    /// The copy now stands for the dictionary as of `applied`, loaded from `began`: the
    /// policy's counters start over.
    fn mark_loaded(&mut self, began: Instant, applied: u64) {
        self.floor_index = self.floor_index.max(applied);
        self.loaded = true;
        self.reads_since_refresh = 0;
        self.last_refresh = Some(began);
        self.refreshes += 1;
    }

    /// Applies the policy before a read.
    fn before_read(&mut self) -> Result<()> {
        if matches!(self.policy, RefreshPolicy::Watch) {
            self.watch_sync()?;
            self.reads_since_refresh += 1;
            return Ok(());
        }
        let due = !self.loaded
            || match &self.policy {
                RefreshPolicy::Always => true,
                RefreshPolicy::Lock(lock) => lock.is_set(),
                RefreshPolicy::Count(n) => self.reads_since_refresh >= (*n).max(1),
                RefreshPolicy::Time(age) => self.last_refresh.map_or(true, |t| t.elapsed() >= *age),
                RefreshPolicy::Watch => false,
            };
        if due {
            self.refresh()?;
        }
        self.reads_since_refresh += 1;
        Ok(())
    }

    // ----- reads (from the local copy, refreshed per the policy) --------------------------

    /// The value of `key`, as a copy: values read one after another can be held together.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.before_read()?;
        Ok(self.local.get(key.as_ref()).cloned())
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
        if self.watched.is_some() {
            // The copy takes the write from the stream, in its place among the others'.
            return Ok(self.local.get(key.as_ref()).cloned());
        }
        Ok(self
            .local
            .insert(key.as_ref().to_vec(), value.as_ref().to_vec()))
    }

    /// Removes `key` from the cluster; returns the previous value in the local copy.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let (_, revision) = self.client.delete_with_revision(key.as_ref())?;
        self.floor_index = self.floor_index.max(revision);
        if self.watched.is_some() {
            return Ok(self.local.get(key.as_ref()).cloned());
        }
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
            Err(Error::CasFailed { current }) if self.watched.is_some() => {
                // The copy will show the current value once the stream reaches it.
                if let Some((_, rev)) = &current {
                    self.floor_index = self.floor_index.max(*rev);
                }
                return Err(Error::CasFailed { current });
            }
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
        if self.watched.is_some() {
            return Ok(());
        }
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

/// Prints the local copy (as it is, without refreshing) as a map of quoted text; see
/// [`Escaped`]'s `Debug`.
impl fmt::Debug for DistributedDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.local.iter().map(|(k, v)| (Escaped(k), Escaped(v))))
            .finish()
    }
}

/// `for (key, value) in &dict` walks the local copy as it is, in key order, **without
/// refreshing** (a `for` loop has no way to report a failed refresh): call
/// [`DistributedDict::refresh`] first, or use [`DistributedDict::iter`], which applies the
/// policy. Items are `(&[u8], &[u8])`, as from `iter`; wrap them in [`Escaped`] to print them.
impl<'a> IntoIterator for &'a DistributedDict {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        Iter(self.local.iter())
    }
}

/// The entries of a [`DistributedDict`]'s local copy, in key order (from `&dict`).
pub struct Iter<'a>(btree_map::Iter<'a, Vec<u8>, Vec<u8>>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}
