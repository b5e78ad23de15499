//! Streaming reads that resume after transient failures.
//!
//! LTX files are write-once, so a body cut off mid-stream can be resumed with a range request
//! from the last delivered byte (pinned with `If-Match` to the first response's ETag, so a
//! file deleted and recreated meanwhile fails instead of splicing two objects). This mirrors
//! Litestream's resumable reader used by restore.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange};
use sluice_ltx::TxId;

use crate::client::ReplicaClient;
use crate::error::{Error, Result};
use crate::retry::retry;

struct State {
    client: ReplicaClient,
    key: Path,
    /// Bytes delivered so far.
    offset: u64,
    /// Size and ETag of the object, known after the first response.
    size: Option<u64>,
    e_tag: Option<String>,
    body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    /// Consecutive mid-stream failures since the last delivered chunk.
    failures: u32,
    done: bool,
}

impl ReplicaClient {
    /// The file as a stream of chunks. Transient failures, both opening the object and in the
    /// middle of the body, are retried under the client's [`crate::RetryPolicy`].
    pub fn get_stream(&self, level: u8, min: TxId, max: TxId) -> BoxStream<'static, Result<Bytes>> {
        let state = State {
            client: self.clone(),
            key: self.key(level, min, max),
            offset: 0,
            size: None,
            e_tag: None,
            body: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(state, next_chunk).boxed()
    }
}

async fn next_chunk(mut st: State) -> Option<(Result<Bytes>, State)> {
    loop {
        if st.done || st.size.is_some_and(|size| st.offset >= size) {
            return None;
        }
        if st.body.is_none()
            && let Err(e) = open(&mut st).await
        {
            st.done = true;
            return Some((Err(e), st));
        }
        let Some(body) = st.body.as_mut() else {
            continue;
        };
        match body.next().await {
            // An empty chunk is no progress; skipping it keeps `failures` counting, so a body
            // that keeps breaking at the same offset still gives up.
            Some(Ok(chunk)) if chunk.is_empty() => {}
            Some(Ok(chunk)) => {
                st.offset += chunk.len() as u64;
                st.failures = 0;
                return Some((Ok(chunk), st));
            }
            Some(Err(e)) => {
                let err = st.client.err("GET", &st.key, e);
                st.body = None;
                st.failures += 1;
                if !err.is_retryable() || st.failures >= st.client.retry.max_attempts {
                    st.done = true;
                    return Some((Err(err), st));
                }
                let pause = st.client.retry.jittered(st.failures);
                tracing::debug!(key = %st.key, offset = st.offset, error = %err, "resuming GET");
                tokio::time::sleep(pause).await;
            }
            None => {
                if let Some(size) = st.size.filter(|size| st.offset < *size) {
                    // The body ended early without an error: treat like a cut connection.
                    st.body = None;
                    st.failures += 1;
                    if st.failures >= st.client.retry.max_attempts {
                        st.done = true;
                        let err = truncated(&st, size);
                        return Some((Err(err), st));
                    }
                    continue;
                }
                return None;
            }
        }
    }
}

async fn open(st: &mut State) -> Result<()> {
    let (client, key) = (&st.client, &st.key);
    let (offset, e_tag) = (st.offset, st.e_tag.clone());
    let res = retry(&client.retry, || async {
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            if_match: e_tag.clone(),
            ..GetOptions::default()
        };
        client.store.get_opts(key, opts).await.map_err(|e| client.err("GET", key, e))
    })
    .await?;
    st.size.get_or_insert(res.meta.size);
    if st.e_tag.is_none() {
        st.e_tag = res.meta.e_tag.clone();
    }
    st.body = Some(res.into_stream());
    Ok(())
}

fn truncated(st: &State, size: u64) -> Error {
    Error::Store {
        op: "GET",
        key: st.key.to_string(),
        store: st.client.description.to_string(),
        cause: crate::error::Cause::Connection,
        retryable: true,
        source: Box::new(object_store::Error::Generic {
            store: "sluice",
            source: format!("body ended at byte {} of {size}", st.offset).into(),
        }),
    }
}
