//! Restores through a `FaultyStore`: transient request failures, corrupted bodies, latency
//! spikes and bodies cut off mid-stream. Correct restores must give exactly the bytes the
//! fixture manifests (or a synthetic replica built here) say; failed restores must name the
//! damaged file and leave neither the output nor a temp file behind.
//!
//! Every test prints its seed (`SEED=<n>`); rerun a failure with `SEED=<n> cargo test ...`.
//!
//! The store under test is the file backend (`LocalFileSystem`, 8 KiB body chunks) over a
//! private copy of the replica, wrapped in `FaultyStore`. (`object_store::memory::InMemory`
//! would need `object_store` as a dev-dependency of this crate; the local store also exercises
//! real chunked bodies, ETags and `If-Match` on resumed ranged reads.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Error;
use sluice_engine::restore::{self, RestoreOptions, Target, file_label};
use sluice_ltx::{DatabaseChecksum, Encoder, FLAG_NO_CHECKSUM, Header, TxId, format_filename};
use sluice_storage::{FaultConfig, FaultyStore, ReplicaClient, RetryPolicy, StoreKind};
use sluice_testkit::fixtures::{copy_replica_to, load_manifest, txid};
use sluice_testkit::hash::file_sha256;

/// Fast but patient: 20% failures must practically never exhaust the attempts
/// (0.2^12 ≈ 4e-9 per operation), and backoff must not dominate test time.
fn fast_retry() -> RetryPolicy {
    RetryPolicy { max_attempts: 12, base: Duration::from_millis(1), cap: Duration::from_millis(10) }
}

/// `(client, faulty)` over the file replica at `$dir`: the client reads through `faulty`,
/// whose knobs and counters the test drives. A macro because `FaultyStore<T>`'s type
/// parameter is `Arc<dyn object_store::ObjectStore>`, which this crate cannot name.
macro_rules! faulty_client {
    ($dir:expr, $seed:expr) => {{
        let dir: &Path = $dir;
        let plain = ReplicaClient::from_url(&format!("file://{}", dir.display())).unwrap();
        let faulty = FaultyStore::new(plain.store().clone(), $seed);
        let prefix: &str = plain.prefix().as_ref();
        let client =
            ReplicaClient::new(Arc::new(faulty.clone()), StoreKind::File, prefix).with_retry_policy(fast_retry());
        (client, faulty)
    }};
}

fn plain_client(dir: &Path) -> ReplicaClient {
    ReplicaClient::from_url(&format!("file://{}", dir.display())).unwrap()
}

fn opts(target: Target) -> RestoreOptions {
    RestoreOptions { target, ..Default::default() }
}

/// Names left in `dir` (to prove no temp file survives).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Latest plus up to `n` restorable TXIDs spread over the history, with expected db sha256.
fn fixture_targets(name: &str, n: usize) -> Vec<(Target, String)> {
    let m = load_manifest(name);
    let latest = m.latest_restore().result.as_ref().unwrap().db_sha256.clone();
    let mut out = vec![(Target::Latest, latest)];
    let txids: Vec<(u64, String)> = m
        .summary_by_txid
        .iter()
        .filter(|(_, s)| s.restorable)
        .filter_map(|(t, s)| Some((txid(t), s.db_sha256.clone()?)))
        .collect();
    let step = txids.len().div_ceil(n.max(1)).max(1);
    out.extend(txids.iter().step_by(step).map(|(t, sha)| (Target::Txid(TxId(*t)), sha.clone())));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_still_restore_fixture_bytes() {
    let seed = sluice_testkit::seed();
    let mut extra_requests = 0u64;
    let mut restores = 0;
    for (i, name) in ["pitr", "compacted", "basic"].into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let replica = copy_replica_to(name, tmp.path().join("replica"));
        let (client, faulty) = faulty_client!(&replica, seed.wrapping_add(i as u64));
        let outs = tmp.path().join("out");
        std::fs::create_dir(&outs).unwrap();
        for (j, (target, want)) in fixture_targets(name, 6).into_iter().enumerate() {
            // Same restore without faults first: the request count it needs is the baseline
            // that proves the faulty run really was retried (not a vacuous pass).
            faulty.set_transient_failure_rate(0.0);
            faulty.reset_counts();
            let clean = outs.join(format!("clean-{j}.db"));
            restore::restore(&client, &clean, &opts(target)).await.unwrap();
            let baseline = faulty.counts().total();

            faulty.set_transient_failure_rate(0.2);
            faulty.reset_counts();
            let out = outs.join(format!("faulty-{j}.db"));
            let summary = restore::restore(&client, &out, &opts(target))
                .await
                .unwrap_or_else(|e| panic!("{name} {target:?} with 20% transient failures (seed {seed}): {e}"));
            let c = faulty.counts();
            assert_eq!(file_sha256(&out), want, "{name} {target:?}: wrong bytes under faults");
            assert_eq!(file_sha256(&clean), want, "{name} {target:?}: wrong bytes without faults");
            assert!(c.total() >= baseline, "{name} {target:?}: fewer requests with faults ({c:?}) than without");
            extra_requests += c.total() - baseline;
            restores += 1;
            eprintln!("{name} {target:?}: plan {} files, {baseline} requests clean, {c:?} faulty", summary.plan.len());
        }
        let left: Vec<String> = entries(&outs).into_iter().filter(|n| !n.ends_with(".db")).collect();
        assert!(left.is_empty(), "{name}: temp files left behind: {left:?}");
    }
    eprintln!("{restores} restores, {extra_requests} retried requests");
    // ~20% of several hundred requests: zero retries means no fault was ever injected.
    assert!(extra_requests >= 10, "faults were not injected: only {extra_requests} extra requests (seed {seed})");
}

/// Every GET body has one byte flipped: the restore must fail on the first file it applies,
/// say which file, and leave nothing in the output directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_reads_fail_naming_the_file_and_leave_nothing() {
    let seed = sluice_testkit::seed();
    let (mut checked, mut harmless) = (0, 0);
    for (i, name) in ["pitr", "compacted", "basic"].into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let replica = copy_replica_to(name, tmp.path().join("replica"));
        for (j, (target, want)) in fixture_targets(name, 3).into_iter().enumerate() {
            let plan = restore::plan_restore(&plain_client(&replica), target).await.unwrap();
            let first = file_label(&plan[0]);
            // A different byte per iteration: the flip position comes from the store's RNG.
            for k in 0..4u64 {
                let (client, faulty) = faulty_client!(&replica, seed ^ ((i as u64) << 32 | (j as u64) << 8 | k));
                faulty.set_corrupt_reads(true);
                let outs = tmp.path().join(format!("out-{j}-{k}"));
                std::fs::create_dir(&outs).unwrap();
                let out = outs.join("restored.db");
                let err = match restore::restore(&client, &out, &opts(target)).await {
                    Err(e) => e,
                    // Possible only if the flip leaves every decoded page identical (see
                    // every_single_byte_flip_of_a_snapshot_is_detected_or_harmless).
                    Ok(_) => {
                        assert_eq!(file_sha256(&out), want, "{name} {target:?}: corrupt body restored WRONG bytes");
                        harmless += 1;
                        continue;
                    }
                };
                let msg = err.to_string();
                assert!(
                    matches!(err, Error::Ltx { .. } | Error::FileMismatch { .. } | Error::ChecksumChain { .. }),
                    "{name} {target:?}: unexpected error kind: {err:?}"
                );
                // Usually the first file; a later one if the first file's flip was harmless.
                assert!(
                    plan.iter().any(|f| msg.contains(&file_label(f))),
                    "{name} {target:?}: error names no file of the plan (first {first}): {msg}"
                );
                assert!(faulty.counts().get >= 1, "no GET went through the faulty store");
                assert_eq!(entries(&outs), Vec::<String>::new(), "{name} {target:?}: left files behind");
                checked += 1;
                if k == 0 {
                    eprintln!("{name} {target:?}: {msg}");
                }
            }
        }
    }
    eprintln!("{checked} corrupt restores failed as they should; {harmless} flips were harmless");
    assert!(checked >= 20, "{checked} failed, {harmless} harmless");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_spikes_still_restore_in_plan_order() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let replica = copy_replica_to("pitr", tmp.path().join("replica"));
    let (client, faulty) = faulty_client!(&replica, seed);
    // Spikes make later files of the plan finish downloading before earlier ones; the
    // applier must still see them in plan order.
    faulty.set_latency(Duration::from_millis(1), 0.3, Duration::from_millis(40));
    for (j, (target, want)) in fixture_targets("pitr", 4).into_iter().enumerate() {
        let out = tmp.path().join(format!("out-{j}.db"));
        let t0 = Instant::now();
        let s = restore::restore(&client, &out, &opts(target)).await.unwrap();
        assert_eq!(file_sha256(&out), want, "pitr {target:?} with latency spikes");
        eprintln!("pitr {target:?}: {} files in {:?}", s.plan.len(), t0.elapsed());
    }
    assert!(faulty.counts().get > 0);
}

/// Bodies cut off halfway with a transient error (whole-file path: fetched again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_are_refetched() {
    let seed = sluice_testkit::seed();
    for name in ["pitr", "basic"] {
        let tmp = tempfile::tempdir().unwrap();
        let replica = copy_replica_to(name, tmp.path().join("replica"));
        let (client, faulty) = faulty_client!(&replica, seed);
        faulty.set_config(FaultConfig { truncate_reads_rate: 0.3, ..FaultConfig::default() });
        let mut plan_files = 0;
        // "basic" fetches only ~11 files per round: keep restoring (bounded) until some body was
        // truncated, so the check below never depends on luck.
        let targets = fixture_targets(name, 4);
        for (j, (target, want)) in targets.iter().cycle().take(targets.len() * 20).enumerate() {
            let out = tmp.path().join(format!("out-{j}.db"));
            let s = restore::restore(&client, &out, &opts(*target)).await.unwrap();
            assert_eq!(&file_sha256(&out), want, "{name} {target:?} with truncated bodies");
            plan_files += s.plan.len() as u64;
            let c = faulty.counts();
            if j + 1 >= targets.len() && c.get + c.get_range > plan_files {
                break;
            }
        }
        let c = faulty.counts();
        // Each truncated body costs one more GET than the plan has files.
        assert!(c.get + c.get_range > plan_files, "{name}: nothing was truncated: {c:?} for {plan_files} files");
        eprintln!("{name}: {c:?} for {plan_files} plan files");
    }
}

// ---------------------------------------------------------------------------------------
// A synthetic replica whose snapshot is bigger than restore's whole-file limit (2 MiB), so it
// streams through the bounded channel, plus L0 files that grow, edit and shrink the database.
// The files carry database checksums, so the pre/post-apply chain is verified as well.
// ---------------------------------------------------------------------------------------

const PAGE: usize = 4096;
const SNAPSHOT_PAGES: u32 = 1500;

/// Deterministic page content: 3 KiB of noise (hard to compress) + 1 KiB of a pattern, so
/// the snapshot's LZ4 frames total well over 2 MiB.
fn page(seed: u64, pgno: u32, version: u64) -> Vec<u8> {
    let mut x = seed ^ (u64::from(pgno) << 20) ^ version.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut p = Vec::with_capacity(PAGE);
    while p.len() < 3 * PAGE / 4 {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        p.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    p.resize(PAGE, (pgno % 251) as u8);
    p
}

fn db_checksum(pages: &[Vec<u8>]) -> u64 {
    let mut c = DatabaseChecksum::new();
    for (i, p) in pages.iter().enumerate() {
        c.add(i as u32 + 1, p);
    }
    c.value()
}

struct Synthetic {
    dir: PathBuf,
    /// TXID → the database file restore must produce.
    images: BTreeMap<u64, Vec<u8>>,
    snapshot_size: u64,
}

/// Writes one LTX file holding `pgnos` of `pages` (the state after it) into the replica.
fn write_ltx(dir: &Path, level: u8, min: u64, max: u64, pages: &[Vec<u8>], pgnos: &[u32], pre: u64) -> u64 {
    let mut h = Header::new(PAGE as u32, pages.len() as u32, TxId(min), TxId(max), 1_700_000_000_000 + max as i64);
    h.flags &= !FLAG_NO_CHECKSUM;
    h.pre_apply_checksum = pre;
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for &pg in pgnos {
        enc.encode_page(pg, &pages[pg as usize - 1]).unwrap();
    }
    let (bytes, _) = enc.finish(db_checksum(pages)).unwrap();
    let path = dir.join("ltx").join(level.to_string()).join(format_filename(TxId(min), TxId(max)));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    bytes.len() as u64
}

fn build_synthetic(dir: &Path, seed: u64) -> Synthetic {
    let mut pages: Vec<Vec<u8>> = (1..=SNAPSHOT_PAGES).map(|pg| page(seed, pg, 0)).collect();
    let all: Vec<u32> = (1..=SNAPSHOT_PAGES).collect();
    let snapshot_size = write_ltx(dir, 9, 1, 5, &pages, &all, 0);
    let mut images = BTreeMap::from([(5, pages.concat())]);
    // (txid, new size in pages, pages written): grow, edit, shrink.
    let edits: [(u64, u32, Vec<u32>); 3] = [
        (6, 1510, [3, 700, 1499].into_iter().chain(1501..=1510).collect()),
        (7, 1510, vec![1, 2, 1505]),
        (8, 1490, vec![10, 1490]),
    ];
    for (tx, commit, pgnos) in edits {
        let pre = db_checksum(&pages);
        pages.resize_with(commit as usize, Vec::new);
        for &pg in &pgnos {
            pages[pg as usize - 1] = page(seed, pg, tx);
        }
        write_ltx(dir, 0, tx, tx, &pages, &pgnos, pre);
        images.insert(tx, pages.concat());
    }
    Synthetic { dir: dir.to_path_buf(), images, snapshot_size }
}

fn assert_image(out: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(out).unwrap();
    if got != want {
        let first = got.chunks(PAGE).zip(want.chunks(PAGE)).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes restored, {} expected; first differing page: {:?}",
            got.len(),
            want.len(),
            first.map(|i| i + 1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_snapshot_streams_correctly_under_faults() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let syn = build_synthetic(&tmp.path().join("replica"), seed);
    assert!(syn.snapshot_size > 2 << 20, "snapshot is only {} bytes: would not stream", syn.snapshot_size);

    // Clean first: the synthetic replica itself must be right.
    for (&tx, want) in &syn.images {
        let out = tmp.path().join(format!("clean-{tx}.db"));
        let target = if tx == 8 { Target::Latest } else { Target::Txid(TxId(tx)) };
        restore::restore(&plain_client(&syn.dir), &out, &opts(target)).await.unwrap();
        assert_image(&out, want, &format!("clean restore to {tx}"));
    }

    let (client, faulty) = faulty_client!(&syn.dir, seed);
    faulty.set_config(FaultConfig {
        transient_failure_rate: 0.2,
        truncate_reads_rate: 0.25,
        latency_spike_rate: 0.2,
        latency_spike: Duration::from_millis(20),
        ..FaultConfig::default()
    });
    // At least three rounds, and on until a truncated snapshot stream was resumed (each
    // stream is truncated with probability 1/4, so a few rounds could pass without one).
    for round in 0..40 {
        if round >= 3 && faulty.counts().get_range > 0 {
            break;
        }
        for (&tx, want) in &syn.images {
            let out = tmp.path().join(format!("faulty-{round}-{tx}.db"));
            let target = if tx == 8 { Target::Latest } else { Target::Txid(TxId(tx)) };
            let s = restore::restore(&client, &out, &opts(target))
                .await
                .unwrap_or_else(|e| panic!("restore to {tx} under faults (seed {seed}): {e}"));
            assert_eq!(s.txid, TxId(tx));
            assert_eq!(s.plan[0].level, 9);
            assert_image(&out, want, &format!("faulty restore to {tx}, round {round}"));
        }
    }
    let c = faulty.counts();
    eprintln!("synthetic replica ({} byte snapshot): {c:?}", syn.snapshot_size);
    // At least 12 restores = 12 snapshot streams + 18 L0 GETs + 12 LISTs without faults.
    assert!(c.get + c.get_range + c.list > 42, "faults were not injected: {c:?}");
    // Truncated streams resume with a ranged GET from the last delivered byte.
    assert!(c.get_range > 0, "no streamed body was resumed: {c:?}");
    let left: Vec<String> = entries(tmp.path()).into_iter().filter(|n| !n.ends_with(".db") && n != "replica").collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_snapshot_with_corrupt_body_fails_naming_it() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let syn = build_synthetic(&tmp.path().join("replica"), seed);
    for k in 0..4u64 {
        let (client, faulty) = faulty_client!(&syn.dir, seed.wrapping_add(k));
        faulty.set_corrupt_reads(true);
        let outs = tmp.path().join(format!("out-{k}"));
        std::fs::create_dir(&outs).unwrap();
        let err = restore::restore(&client, &outs.join("r.db"), &opts(Target::Latest))
            .await
            .expect_err("corrupted snapshot restored fine");
        let msg = err.to_string();
        assert!(msg.contains("9/0000000000000001-0000000000000005.ltx"), "error does not name the snapshot: {msg}");
        assert_eq!(entries(&outs), Vec::<String>::new(), "left files behind");
        if k == 0 {
            eprintln!("{msg}");
        }
    }
}

/// A streamed body that keeps breaking exhausts the retries: the restore fails (it must not
/// hang or produce a short file) and cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_that_keeps_breaking_fails_cleanly() {
    let seed = sluice_testkit::seed();
    let tmp = tempfile::tempdir().unwrap();
    let syn = build_synthetic(&tmp.path().join("replica"), seed);
    let (client, faulty) = faulty_client!(&syn.dir, seed);
    faulty.set_config(FaultConfig { truncate_reads_rate: 1.0, ..FaultConfig::default() });
    let outs = tmp.path().join("out");
    std::fs::create_dir(&outs).unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        restore::restore(&client, &outs.join("r.db"), &opts(Target::Latest)),
    )
    .await
    .expect("restore hung on a body that never completes");
    let err = res.expect_err("restore succeeded although every body was cut off");
    eprintln!("{err}");
    assert!(err.to_string().contains("0000000000000001-0000000000000005"), "error does not name the file: {err}");
    assert_eq!(entries(&outs), Vec::<String>::new(), "left files behind");
}

/// Deterministic version of the corrupt-read test: flip each byte of a small snapshot in
/// turn (0xff XOR, as `FaultyStore` does). Every flip must fail the restore, except flips that
/// leave the decoded pages identical (the LTX file checksum covers the *uncompressed* pages,
/// as in Go's ltx, so e.g. an LZ4 match offset inside a run of zeros can change harmlessly);
/// those must then restore exactly the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_single_byte_flip_of_a_snapshot_is_detected_or_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = copy_replica_to("pitr", tmp.path().join("replica"));
    let snap = replica.join("ltx/9/0000000000000001-0000000000000001.ltx");
    let good = std::fs::read(&snap).unwrap();
    let want = load_manifest("pitr").summary_by_txid["0000000000000001"].db_sha256.clone().unwrap();
    let client = plain_client(&replica);
    let out = tmp.path().join("out.db");
    let (mut harmless, mut wrong) = (Vec::new(), Vec::new());
    for off in 0..good.len() {
        let mut bad = good.clone();
        bad[off] ^= 0xff;
        std::fs::write(&snap, &bad).unwrap();
        let opts = RestoreOptions { target: Target::Txid(TxId(1)), overwrite: true, ..Default::default() };
        if restore::restore(&client, &out, &opts).await.is_ok() {
            if file_sha256(&out) == want { harmless.push(off) } else { wrong.push(off) }
        }
    }
    eprintln!("{} of {} flips restored the right bytes anyway (offsets {harmless:?})", harmless.len(), good.len());
    assert!(wrong.is_empty(), "byte flips at offsets {wrong:?} restored WRONG bytes without an error");
    assert!(harmless.len() < 16, "too many undetected flips: {harmless:?}");
}
