//! The forwarding `ObjectStore` impl of [`FaultyStore`] and the fault actions it applies.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use super::{Fault, FaultyStore, InjectedFault, OpKind, Plan};

fn fault_error(kind: OpKind, fault: Fault, path: &str) -> object_store::Error {
    let source = Box::new(InjectedFault { kind, fault, path: path.to_string() });
    let path = path.to_string();
    match fault {
        // An HttpError is exactly what a real connection failure looks like, so the client's
        // ordinary classifier (not a test-only hook) decides that this is retryable.
        Fault::Transient | Fault::LostResponse => object_store::Error::Generic {
            store: "FaultyStore",
            source: Box::new(HttpError::new(HttpErrorKind::Connect, *source)),
        },
        Fault::PermissionDenied => object_store::Error::PermissionDenied { path, source },
        Fault::Precondition => object_store::Error::Precondition { path, source },
        Fault::NotFound => object_store::Error::NotFound { path, source },
    }
}

/// Runs `op` under `plan`: delay, fail before or after, or pass through.
async fn run<R, F>(kind: OpKind, path: &Path, plan: &Plan, op: F) -> object_store::Result<R>
where
    F: std::future::Future<Output = object_store::Result<R>>,
{
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match plan.fault {
        Some(Fault::LostResponse) => {
            let _ = op.await;
            Err(fault_error(kind, Fault::LostResponse, path.as_ref()))
        }
        Some(fault) => Err(fault_error(kind, fault, path.as_ref())),
        None => op.await,
    }
}

/// Applies corrupt/truncate modes to a GET result.
async fn mangle(res: GetResult, plan: &Plan, path: &Path) -> object_store::Result<GetResult> {
    if plan.corrupt.is_none() && !plan.truncate {
        return Ok(res);
    }
    let GetResult { payload, meta, range, attributes, extensions } = res;
    let whole = GetResult {
        payload,
        meta: meta.clone(),
        range: range.clone(),
        attributes: attributes.clone(),
        extensions: extensions.clone(),
    };
    let mut body = BytesMut::from(whole.bytes().await?);
    if let Some(r) = plan.corrupt.filter(|_| !body.is_empty()) {
        let idx = usize::try_from(r % body.len() as u64).expect("BUG: index below body length");
        body[idx] ^= 0xff;
    }
    let body = body.freeze();
    let chunks: Vec<object_store::Result<Bytes>> = if plan.truncate {
        let cut = body.slice(..body.len() / 2);
        vec![Ok(cut), Err(fault_error(OpKind::Get, Fault::Transient, path.as_ref()))]
    } else {
        vec![Ok(body)]
    };
    let payload = GetResultPayload::Stream(stream::iter(chunks).boxed());
    Ok(GetResult { payload, meta, range, attributes, extensions })
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: ObjectStore> ObjectStore for FaultyStore<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let plan = self.plan(OpKind::Put);
        run(OpKind::Put, location, &plan, self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let plan = self.plan(OpKind::Put);
        let inner = run(OpKind::Put, location, &plan, self.inner.put_multipart_opts(location, opts)).await?;
        Ok(Box::new(FaultyUpload { inner, store: self.clone(), location: location.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let kind = match (options.head, options.range.is_some()) {
            (true, _) => OpKind::Head,
            (false, true) => OpKind::GetRange,
            (false, false) => OpKind::Get,
        };
        let plan = self.plan(kind);
        let res = run(kind, location, &plan, self.inner.get_opts(location, options)).await?;
        mangle(res, &plan, location).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        let plan = self.plan(OpKind::GetRange);
        run(OpKind::GetRange, location, &plan, self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let path = location.clone();
                    let plan = this.plan(OpKind::Delete);
                    let inner = Arc::clone(&this.inner);
                    let one = stream::once(futures::future::ready(Ok(location.clone()))).boxed();
                    let op = async move {
                        let mut results = inner.delete_stream(one);
                        results.next().await.unwrap_or(Ok(location))
                    };
                    run(OpKind::Delete, &path, &plan, op).await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let plan = self.plan(OpKind::List);
        let listing = self.inner.list(prefix);
        delayed_list(plan, prefix, listing)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let plan = self.plan(OpKind::List);
        let listing = self.inner.list_with_offset(prefix, offset);
        delayed_list(plan, prefix, listing)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let plan = self.plan(OpKind::List);
        let path = prefix.cloned().unwrap_or_default();
        run(OpKind::List, &path, &plan, self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let plan = self.plan(OpKind::Copy);
        run(OpKind::Copy, to, &plan, self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        let plan = self.plan(OpKind::Copy);
        run(OpKind::Copy, to, &plan, self.inner.rename_opts(from, to, options)).await
    }
}

/// A multipart upload through [`FaultyStore`]: each part, the completion and the abort is a
/// request of its own (as on S3), counted as [`OpKind::Put`] and subject to fault injection.
#[derive(Debug)]
struct FaultyUpload<T: ObjectStore> {
    inner: Box<dyn MultipartUpload>,
    store: FaultyStore<T>,
    location: Path,
}

#[async_trait]
impl<T: ObjectStore> MultipartUpload for FaultyUpload<T> {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // Drawn here, not when the future is first polled, so the RNG order follows the order
        // parts are submitted in.
        let plan = self.store.plan(OpKind::Put);
        let op = match plan.fault {
            // The inner part is only submitted when the request "reaches the store": a part
            // failing before that must not advance the inner upload's part numbering/offset.
            None | Some(Fault::LostResponse) => self.inner.put_part(data),
            Some(_) => Box::pin(futures::future::ready(Ok(()))),
        };
        let location = self.location.clone();
        Box::pin(async move { run(OpKind::Put, &location, &plan, op).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let plan = self.store.plan(OpKind::Put);
        run(OpKind::Put, &self.location, &plan, self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let plan = self.store.plan(OpKind::Put);
        run(OpKind::Put, &self.location, &plan, self.inner.abort()).await
    }
}

fn delayed_list(
    plan: Plan,
    prefix: Option<&Path>,
    listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let path = prefix.cloned().unwrap_or_default();
    if let Some(fault) = plan.fault {
        let err = fault_error(OpKind::List, fault, path.as_ref());
        return stream::once(async move {
            tokio::time::sleep(plan.delay).await;
            Err(err)
        })
        .boxed();
    }
    stream::once(async move {
        tokio::time::sleep(plan.delay).await;
        listing
    })
    .flatten()
    .boxed()
}
