//! One writer per replica. A small lease object beside the level folders names the daemon
//! that writes the replica; a second daemon refuses to start while the lease is live.
//! Create-only uploads remain the real guarantee against a forked history: the lease turns
//! a would-be conflict into a clear refusal at start-up.
//!
//! The lease is renewed only when the daemon uploads, so an idle replica costs no requests;
//! a restarted daemon recognises its own lease through the writer ID kept in its meta
//! directory, so a crash never locks it out.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};
use sluice_storage::ReplicaClient;

use crate::error::{Error, Result};
use crate::perms::Perms;
use crate::write::now_ms;

/// Object name of the lease, at the replica's root.
pub const LEASE_NAME: &str = "sluice-lease.json";
/// How long a lease stays valid without renewal, unless configured otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);

#[derive(Serialize, Deserialize, Clone, Debug)]
struct LeaseDoc {
    writer: String,
    host: String,
    pid: u32,
    db: String,
    expires_ms: i64,
}

/// This daemon's hold on a replica.
pub struct Lease {
    client: ReplicaClient,
    key: Key,
    doc: LeaseDoc,
    ttl: Duration,
    /// The version our last write created, on stores with conditional writes: a renewal
    /// is then one conditional write, which fails if anybody else wrote the lease since.
    etag: Option<UpdateVersion>,
}

/// What a lease write did.
enum Put {
    Written,
    /// A create-only or conditional write found the lease there or changed.
    Lost,
    /// The store has no conditional overwrites (local files).
    Unsupported,
}

/// The writer ID kept in the meta directory, created with the database's permissions.
fn writer_id(meta_dir: &Path, db: &Path) -> Result<String> {
    let path = meta_dir.join("sluice.writer-id");
    if let Ok(s) = std::fs::read_to_string(&path)
        && s.trim().len() == 32
    {
        return Ok(s.trim().to_string());
    }
    let id = format!("{:016x}{:016x}", rand_u64(), rand_u64());
    // A database that does not exist yet (a VFS writer's buffer before its first write)
    // has nothing to follow: private.
    let perms = if db.exists() { Perms::of_db(db)? } else { Perms::PRIVATE };
    perms.create_dir_all(meta_dir).map_err(|e| Error::io("create", meta_dir, e))?;
    perms.write(&path, id.as_bytes()).map_err(|e| Error::io("write", &path, e))?;
    Ok(id)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

impl Lease {
    /// Takes the lease, or fails with [`Error::Conflict`] naming the daemon that holds it.
    pub async fn acquire(client: &ReplicaClient, meta_dir: &Path, db: &Path, ttl: Duration) -> Result<Lease> {
        let prefix = client.prefix().as_ref().trim_end_matches('/');
        let key = if prefix.is_empty() { Key::from(LEASE_NAME) } else { Key::from(format!("{prefix}/{LEASE_NAME}")) };
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
        let doc = LeaseDoc {
            writer: writer_id(meta_dir, db)?,
            host,
            pid: std::process::id(),
            db: db.display().to_string(),
            expires_ms: 0,
        };
        let mut lease = Lease { client: client.clone(), key, doc, ttl, etag: None };
        // Most starts find no lease (a new replica, or the last daemon stopped cleanly and
        // deleted it): a create-only write takes it in one request; a lease that is there
        // costs the read it needed anyway.
        if lease.write(PutMode::Create).await? {
            return Ok(lease);
        }
        for _ in 0..3 {
            match lease.read().await? {
                None => {
                    if lease.write(PutMode::Create).await? {
                        return Ok(lease);
                    }
                }
                Some((held, etag)) if lease.owns(&held) || held.expires_ms < now_ms() => {
                    // Conditional on the version read: of two daemons taking over an expired
                    // lease at once, one wins.
                    if lease.write(update(etag)).await? {
                        return Ok(lease);
                    }
                }
                Some((held, _)) => {
                    return Err(Error::Conflict {
                        replica: client.description().to_string(),
                        reason: format!(
                            "another sluice daemon writes this replica (database {} on host {:?}, pid {}); its lease \
                             expires in {}s. Stop it first, or delete {} from the replica if it is gone for good",
                            held.db,
                            held.host,
                            held.pid,
                            (held.expires_ms - now_ms()) / 1000,
                            LEASE_NAME
                        ),
                    });
                }
            }
        }
        Err(Error::Conflict {
            replica: client.description().to_string(),
            reason: "could not take the replica lease".into(),
        })
    }

    /// The same writer ID on the same host: a clone of the meta directory on another machine
    /// does not inherit the lease.
    fn owns(&self, held: &LeaseDoc) -> bool {
        held.writer == self.doc.writer && held.host == self.doc.host
    }

    async fn read(&self) -> Result<Option<(LeaseDoc, UpdateVersion)>> {
        match self.client.store().get(&self.key).await {
            Ok(r) => {
                // GCS matches on the generation (`version`), the others on the ETag.
                let etag = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                let bytes = r.bytes().await.map_err(|e| self.store_err("GET", e))?;
                // An unreadable lease is treated as expired rather than blocking forever.
                let doc = serde_json::from_slice(&bytes).unwrap_or(LeaseDoc {
                    writer: String::new(),
                    host: String::new(),
                    pid: 0,
                    db: String::new(),
                    expires_ms: 0,
                });
                Ok(Some((doc, etag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("GET", e)),
        }
    }

    /// Writes the lease with a fresh expiry; `false` if a create-only or conditional write
    /// lost a race.
    async fn write(&mut self, mode: PutMode) -> Result<bool> {
        match self.put(mode.clone()).await? {
            Put::Written => Ok(true),
            Put::Lost => Ok(false),
            // Stores without conditional updates (local files): plain overwrite; the daemon
            // lock file already keeps two daemons on one host apart.
            Put::Unsupported => {
                self.put(PutMode::Overwrite).await?;
                self.etag = None;
                Ok(true)
            }
        }
    }

    async fn put(&mut self, mode: PutMode) -> Result<Put> {
        self.doc.expires_ms = now_ms() + self.ttl.as_millis() as i64;
        let body = Bytes::from(serde_json::to_vec(&self.doc).unwrap_or_default());
        match self.client.put_root_object(LEASE_NAME, body, mode.clone()).await {
            Ok(v) => {
                // A plain overwrite's version is no proof that nobody wrote in between.
                let known = v.e_tag.is_some() || v.version.is_some();
                self.etag = (known && !matches!(mode, PutMode::Overwrite)).then_some(v);
                Ok(Put::Written)
            }
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(Put::Lost),
            Err(object_store::Error::NotImplemented { .. }) if matches!(mode, PutMode::Update(_)) => {
                Ok(Put::Unsupported)
            }
            Err(e) => Err(self.store_err("PUT", e)),
        }
    }

    /// Renews the lease when half its lifetime has passed; fails with a conflict if another
    /// daemon took it over meanwhile (after this one sat idle past the TTL).
    pub async fn renew_if_due(&mut self) -> Result<()> {
        if self.doc.expires_ms - now_ms() > (self.ttl.as_millis() / 2) as i64 {
            return Ok(());
        }
        self.renew_now().await
    }

    /// Renews the lease at once: one conditional write on stores that have them (two small
    /// requests otherwise), which also probes whether storage answers again during an
    /// outage, before an upload costs a merge.
    pub async fn renew_now(&mut self) -> Result<()> {
        let replica = self.client.description().to_string();
        let taken = move |held: &LeaseDoc| Error::Conflict {
            replica: replica.clone(),
            reason: format!("the replica lease was taken over by the daemon for {} on host {:?}", held.db, held.host),
        };
        if let Some(etag) = self.etag.clone() {
            match self.put(update(etag)).await? {
                Put::Written => return Ok(()),
                // Changed since our write (or our last write's reply was lost): the read
                // below tells whose it is.
                Put::Lost => {}
                Put::Unsupported => self.etag = None,
            }
        }
        for _ in 0..3 {
            let written = match self.read().await? {
                Some((held, _)) if !self.owns(&held) && held.expires_ms >= now_ms() => return Err(taken(&held)),
                Some((_, etag)) => self.write(update(etag)).await?,
                None => self.write(PutMode::Create).await?,
            };
            if written {
                return Ok(());
            }
            // A conditional write lost: to another writer, or to a retry of our own write
            // whose first attempt went through (its response was lost). The next read tells.
        }
        Err(Error::Conflict {
            replica: self.client.description().to_string(),
            reason: "could not renew the replica lease: it changed under every attempt".into(),
        })
    }

    /// Gives the lease up on a clean shutdown.
    pub async fn release_ref(&self) {
        if let Ok(Some((held, _))) = self.read().await
            && self.owns(&held)
        {
            let _ = self.client.store().delete(&self.key).await;
        }
    }

    fn store_err(&self, op: &'static str, e: object_store::Error) -> Error {
        Error::Storage(sluice_storage::Error::from_object_store(op, self.key.as_ref(), self.client.description(), e))
    }
}

/// A conditional overwrite of the version read (plain overwrite when the store gave none).
fn update(v: UpdateVersion) -> PutMode {
    if v.e_tag.is_none() && v.version.is_none() { PutMode::Overwrite } else { PutMode::Update(v) }
}
