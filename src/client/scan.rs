//! Scans: a key range read page by page, each page one request, resumed after the last key a
//! page returned. Must not hold a page beyond the caller's iteration (a scan of the whole
//! dictionary costs one page of memory at a time).

use super::error::unexpected;
use super::{route_for, Client, Consistency, Error, KeyValue, Request, Response, Result, Retry};

/// What to scan. `Default` scans everything, linearizably, in pages of the client's
/// `scan_page_size`.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub prefix: Vec<u8>,
    /// Start after this key (exclusive), e.g. to resume a scan.
    pub start_after: Option<Vec<u8>>,
    /// Stop after this many keys in all (`None`: no limit).
    pub limit: Option<u64>,
    /// Keys per request; 0 means the client's `scan_page_size`.
    pub page_size: u32,
    pub consistency: Consistency,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            prefix: Vec::new(),
            start_after: None,
            limit: None,
            page_size: 0,
            consistency: Consistency::Linearizable,
        }
    }
}

/// An iterator over the pages of a scan: each item is one request's worth of keys, in order.
/// A failed page ends the iteration after yielding its error.
pub struct Pages<'a> {
    client: &'a mut Client,
    opts: ScanOptions,
    start_after: Option<Vec<u8>>,
    remaining: Option<u64>,
    page_size: u32,
    done: bool,
    last_applied_index: u64,
}

impl<'a> Pages<'a> {
    pub(super) fn new(client: &'a mut Client, opts: ScanOptions, page_size: u32) -> Pages<'a> {
        Pages {
            client,
            start_after: opts.start_after.clone(),
            remaining: opts.limit,
            page_size,
            opts,
            done: false,
            last_applied_index: 0,
        }
    }

    /// The applied index of the server that answered the last page.
    pub fn applied_index(&self) -> u64 {
        self.last_applied_index
    }

    /// The keys one by one rather than page by page.
    pub fn items(self) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.flat_map(|page| -> Box<dyn Iterator<Item = Result<KeyValue>>> {
            match page {
                Ok(items) => Box::new(items.into_iter().map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
    }
}

impl Iterator for Pages<'_> {
    type Item = Result<Vec<KeyValue>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.remaining == Some(0) {
            return None;
        }
        let limit = match self.remaining {
            Some(r) => r.min(self.page_size as u64) as u32,
            None => self.page_size,
        };
        let mut req = Request::Scan {
            prefix: self.opts.prefix.clone(),
            start_after: self.start_after.take(),
            limit,
            consistency: self.opts.consistency,
        };
        let route = route_for(self.opts.consistency);
        let resp = self.client.call(&mut req, route, Retry::Idempotent);
        match resp {
            Ok(Response::ScanPage {
                items,
                more,
                applied_index,
            }) => {
                self.last_applied_index = applied_index;
                let page: Vec<KeyValue> = items
                    .into_iter()
                    .map(|(key, value, revision)| KeyValue {
                        key,
                        value,
                        revision,
                    })
                    .collect();
                if let Some(r) = &mut self.remaining {
                    *r = r.saturating_sub(page.len() as u64);
                }
                match page.last() {
                    Some(last) if more => self.start_after = Some(last.key.clone()),
                    // Nothing to resume after: stopping here would truncate the scan silently.
                    None if more => {
                        self.done = true;
                        return Some(Err(Error::Protocol {
                            what: "scan page empty yet more follow".into(),
                            may_have_applied: false,
                        }));
                    }
                    _ => self.done = true,
                }
                Some(Ok(page))
            }
            Ok(other) => {
                self.done = true;
                Some(Err(unexpected(other, false)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
