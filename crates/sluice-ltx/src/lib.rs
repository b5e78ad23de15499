//! LTX: the file format Litestream 0.5 writes to replicas (ltx v0.5.2), byte for byte.
//!
//! # Layout
//! - [`header`]: the 100-byte header and 16-byte trailer, validation rules.
//! - [`Encoder`]: streaming writer (per-page LZ4 blocks, varint page index, CRC-64/GO-ISO).
//! - [`Decoder`]: streaming reader for both page encodings Litestream has written, checking
//!   every structural rule and the file checksum.
//! - [`index`]: random access — locate the page index from a file's tail, decode one frame.
//! - [`compactor`]: merge a contiguous run of files keeping the latest page versions.
//! - [`checksum`]: CRC-64/GO-ISO and the rolling database checksum.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
pub mod compactor;
mod decoder;
mod encoder;
mod error;
pub mod header;
pub mod index;
mod lz4frame;
mod txid;
mod varint;

pub use checksum::{CHECKSUM_FLAG, DatabaseChecksum, crc64, page_checksum};
pub use compactor::{PageSink, compact, compact_with, merge_into};
pub use decoder::{Decoder, FileSummary, verify};
pub use encoder::{Encoder, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, PageIndexEntry};
pub use error::{ChecksumKind, Error, Result, Section};
pub use header::{FLAG_NO_CHECKSUM, HEADER_SIZE, Header, TRAILER_SIZE, Trailer, lock_pgno};
pub use txid::{ParseTxIdError, TxId, format_filename, parse_filename};
