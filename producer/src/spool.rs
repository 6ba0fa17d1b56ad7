//! The disk budget of bulk uploads' spool files.
//!
//! Validated rows wait in a spool file until the whole upload has passed,
//! so without a bound, concurrent uploads could fill the disk. Every upload
//! holds a [`SpoolLease`] that grows as its spool file grows: past what one
//! upload could ever get (`producer.tenant_spool_bytes`, at most
//! `producer.spool_budget_bytes`) it is refused for good (`413`); past what
//! is free now, because other uploads hold the rest, it is refused for now
//! (`429`). The lease travels with the file ([`SpoolFile`]) and is given
//! back when the file is dropped, however the upload ends.

use infq_common::metrics::SPOOL_BYTES;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

/// Why a spool file may not grow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolRefused {
    /// The upload alone needs more than an upload may ever hold.
    #[error("the upload's validated rows need more than {limit} bytes of spool (producer.{key})")]
    TooLarge {
        /// The bytes one upload may hold.
        limit: u64,
        /// The configuration key that sets it.
        key: &'static str,
    },
    /// Other uploads hold the spool space this one needs now.
    #[error("the producer's spool space is taken by other uploads in flight (producer.{key}); try again later")]
    Busy {
        /// The budget that is spent.
        key: &'static str,
    },
}

impl SpoolRefused {
    /// The [`SpoolRefused`] inside `e`, if that is what it is.
    pub fn of(e: &std::io::Error) -> Option<&SpoolRefused> {
        e.get_ref().and_then(|r| r.downcast_ref::<SpoolRefused>())
    }
}

#[derive(Default)]
struct Held {
    total: u64,
    tenants: HashMap<String, u64>,
}

/// Spool bytes held by the uploads in flight in this process, against a
/// budget for all of them and one for each tenant.
pub struct SpoolBudget {
    total: u64,
    per_tenant: u64,
    held: Mutex<Held>,
}

impl SpoolBudget {
    /// A budget of `total` bytes, of which one tenant may hold
    /// `per_tenant`.
    pub fn new(total: u64, per_tenant: u64) -> Arc<Self> {
        // Exported from the start, so a dashboard sees 0 rather than
        // nothing (its help comes with every metric's, in `metrics`).
        metrics::gauge!(SPOOL_BYTES).set(0.0);
        Arc::new(Self {
            total,
            per_tenant,
            held: Mutex::new(Held::default()),
        })
    }

    /// An empty lease for one upload of `tenant`.
    pub fn lease(self: &Arc<Self>, tenant: &str) -> SpoolLease {
        SpoolLease {
            budget: self.clone(),
            tenant: tenant.to_string(),
            held: 0,
        }
    }

    /// Bytes held now by every upload.
    pub fn held(&self) -> u64 {
        self.held.lock().expect("spool budget lock").total
    }

    fn release(&self, tenant: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut held = self.held.lock().expect("spool budget lock");
        held.total = held.total.saturating_sub(n);
        if let Some(t) = held.tenants.get_mut(tenant) {
            *t = t.saturating_sub(n);
            if *t == 0 {
                held.tenants.remove(tenant);
            }
        }
        metrics::gauge!(SPOOL_BYTES).set(held.total as f64);
    }
}

/// The spool bytes one upload holds; given back when dropped.
pub struct SpoolLease {
    budget: Arc<SpoolBudget>,
    tenant: String,
    held: u64,
}

impl SpoolLease {
    /// Takes `n` more bytes, or says why not.
    pub fn grow(&mut self, n: u64) -> Result<(), SpoolRefused> {
        let b = &self.budget;
        let (limit, key) = if b.per_tenant <= b.total {
            (b.per_tenant, "tenant_spool_bytes")
        } else {
            (b.total, "spool_budget_bytes")
        };
        if self.held.saturating_add(n) > limit {
            return Err(SpoolRefused::TooLarge { limit, key });
        }
        let mut held = b.held.lock().expect("spool budget lock");
        if held.total.saturating_add(n) > b.total {
            return Err(SpoolRefused::Busy {
                key: "spool_budget_bytes",
            });
        }
        let tenant = held.tenants.get(&self.tenant).copied().unwrap_or(0);
        if tenant.saturating_add(n) > b.per_tenant {
            return Err(SpoolRefused::Busy {
                key: "tenant_spool_bytes",
            });
        }
        held.total += n;
        *held.tenants.entry(self.tenant.clone()).or_default() += n;
        self.held += n;
        metrics::gauge!(SPOOL_BYTES).set(held.total as f64);
        Ok(())
    }

    /// Gives back `n` bytes taken but not used.
    fn shrink(&mut self, n: u64) {
        let n = n.min(self.held);
        self.held -= n;
        self.budget.release(&self.tenant, n);
    }

    /// Bytes this upload holds.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for SpoolLease {
    fn drop(&mut self) {
        self.budget.release(&self.tenant, self.held);
    }
}

/// A spool file that grows only within its lease; dropping it frees the
/// disk and the budget together.
pub struct SpoolFile<F> {
    file: F,
    lease: SpoolLease,
}

impl<F> SpoolFile<F> {
    /// `file`, empty, growing within `lease`.
    pub fn new(file: F, lease: SpoolLease) -> Self {
        Self { file, lease }
    }

    /// Bytes of budget held.
    pub fn held(&self) -> u64 {
        self.lease.held()
    }

    /// The file, to read it where a reader needs the file itself.
    pub fn file(&self) -> &F {
        &self.file
    }
}

impl<F: Write> Write for SpoolFile<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let want = buf.len() as u64;
        self.lease
            .grow(want)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::StorageFull, e))?;
        match self.file.write(buf) {
            Ok(n) => {
                self.lease.shrink(want - n as u64);
                Ok(n)
            }
            Err(e) => {
                self.lease.shrink(want);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl<F: Read> Read for SpoolFile<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl<F: Seek> Seek for SpoolFile<F> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_past_its_limit_is_too_large_for_good() {
        let b = SpoolBudget::new(1000, 600);
        let mut a = b.lease("acme");
        assert_eq!(a.grow(600), Ok(()));
        assert_eq!(
            a.grow(1),
            Err(SpoolRefused::TooLarge {
                limit: 600,
                key: "tenant_spool_bytes"
            })
        );
        let b = SpoolBudget::new(500, 600);
        assert!(matches!(
            b.lease("acme").grow(501),
            Err(SpoolRefused::TooLarge {
                limit: 500,
                key: "spool_budget_bytes"
            })
        ));
    }

    #[test]
    fn others_holding_the_budget_is_busy_until_they_end() {
        let b = SpoolBudget::new(1000, 600);
        let mut a = b.lease("acme");
        let mut a2 = b.lease("acme");
        let mut c = b.lease("corp");
        a.grow(500).unwrap();
        // The tenant's share is taken by its other upload.
        assert!(matches!(a2.grow(200), Err(SpoolRefused::Busy { .. })));
        c.grow(450).unwrap();
        // The whole budget is taken.
        let mut d = b.lease("other");
        assert!(matches!(d.grow(100), Err(SpoolRefused::Busy { .. })));
        assert_eq!(b.held(), 950);
        drop(a);
        assert_eq!(b.held(), 450);
        a2.grow(500).unwrap();
        drop((a2, c));
        assert_eq!(b.held(), 0);
        assert!(b.held.lock().unwrap().tenants.is_empty());
    }

    #[test]
    fn a_spool_file_refuses_to_grow_past_its_lease_and_frees_on_drop() {
        let b = SpoolBudget::new(10, 10);
        let mut f = SpoolFile::new(Vec::new(), b.lease("acme"));
        f.write_all(&[1; 8]).unwrap();
        let err = f.write_all(&[2; 3]).unwrap_err();
        assert!(matches!(
            SpoolRefused::of(&err),
            Some(SpoolRefused::TooLarge { limit: 10, .. })
        ));
        assert_eq!(f.held(), 8);
        assert_eq!(b.held(), 8);
        drop(f);
        assert_eq!(b.held(), 0);
    }
}
