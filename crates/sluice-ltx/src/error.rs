//! Errors that say what is wrong with an LTX file and where.

use std::fmt;

/// The part of an LTX file being read when a problem was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The 100-byte header.
    Header,
    /// A page frame.
    Page,
    /// The page index and its length field.
    Index,
    /// The 16-byte trailer.
    Trailer,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Page => "page block",
            Section::Index => "page index",
            Section::Trailer => "trailer",
        })
    }
}

/// Which checksum did not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumKind {
    /// The whole-file CRC in the trailer.
    File,
    /// The rolling database checksum before applying the file.
    PreApply,
    /// The rolling database checksum after applying the file.
    PostApply,
}

impl fmt::Display for ChecksumKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumKind::File => "file",
            ChecksumKind::PreApply => "pre-apply database",
            ChecksumKind::PostApply => "post-apply database",
        })
    }
}

/// Everything that can go wrong reading or writing LTX.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with `LTX1`.
    #[error("bad magic {found:02x?}: not an LTX file")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// Header flags carry bits this version does not know.
    #[error("unsupported header flags {flags:#010x}")]
    UnsupportedFlags {
        /// The flags field.
        flags: u32,
    },
    /// A header field breaks the format's rules.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// The file ended early.
    #[error("truncated file: unexpected end in {section} at byte {offset}")]
    Truncated {
        /// What was being read.
        section: Section,
        /// Bytes successfully read before the end.
        offset: u64,
    },
    /// A stored checksum differs from the computed one.
    #[error("{which} checksum mismatch: stored {expected:016x}, computed {actual:016x}")]
    ChecksumMismatch {
        /// Which checksum.
        which: ChecksumKind,
        /// The value stored in the file.
        expected: u64,
        /// The value computed from the contents.
        actual: u64,
    },
    /// A page number is zero or beyond the commit size.
    #[error("page {pgno} out of range (commit size {commit} pages)")]
    PageOutOfRange {
        /// The page number.
        pgno: u32,
        /// The database size in pages.
        commit: u32,
    },
    /// Page numbers are not strictly increasing (or not 1..commit in a snapshot).
    #[error("page {pgno} out of order after page {prev}")]
    PageOrder {
        /// The offending page.
        pgno: u32,
        /// The page before it.
        prev: u32,
    },
    /// The SQLite lock page may never be stored.
    #[error("page {pgno} is the lock page and cannot be stored")]
    LockPage {
        /// The lock page number.
        pgno: u32,
    },
    /// A snapshot is missing a page it must hold.
    #[error("snapshot is missing page {pgno} (commit size {commit})")]
    MissingPage {
        /// The missing page.
        pgno: u32,
        /// The database size in pages.
        commit: u32,
    },
    /// A page frame could not be decoded.
    #[error("corrupt frame for page {pgno} at byte {offset}: {reason}")]
    CorruptFrame {
        /// The page number in the frame header.
        pgno: u32,
        /// Offset of the frame in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The page index disagrees with the frames or is malformed.
    #[error("corrupt page index: {0}")]
    CorruptIndex(String),
    /// Bytes follow the trailer.
    #[error("unexpected data after trailer at byte {offset}")]
    TrailingData {
        /// Where the extra data starts.
        offset: u64,
    },
    /// A page buffer of the wrong size was given.
    #[error("page data is {actual} bytes, page size is {expected}")]
    PageSizeMismatch {
        /// The file's page size.
        expected: u32,
        /// The buffer's length.
        actual: usize,
    },
    /// Files to merge have different page sizes.
    #[error("page size {actual} differs from the first file's {expected}")]
    MixedPageSizes {
        /// The first input's page size.
        expected: u32,
        /// This input's page size.
        actual: u32,
    },
    /// Files to merge leave a gap in TXIDs.
    #[error("non-contiguous TXIDs: previous file ends at {prev_max:016x}, next covers {next_min:016x}-{next_max:016x}")]
    NonContiguousTxid {
        /// The previous file's max TXID.
        prev_max: u64,
        /// The next file's min TXID.
        next_min: u64,
        /// The next file's max TXID.
        next_max: u64,
    },
    /// A merge was asked to combine nothing.
    #[error("nothing to compact: no input files")]
    NoInputs,
    /// An encoder was used after an earlier error or after finishing.
    #[error("encoder is closed")]
    Closed,
}

/// `Result` with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Short stable name of the error's kind, as the fixture manifests spell it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Io(_) => "io",
            Error::BadMagic { .. } => "bad_magic",
            Error::UnsupportedFlags { .. } => "unsupported_flags",
            Error::InvalidHeader(_) => "invalid_header",
            Error::Truncated { .. } => "truncated",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::PageOutOfRange { .. } => "page_out_of_range",
            Error::PageOrder { .. } => "page_order",
            Error::LockPage { .. } => "lock_page",
            Error::MissingPage { .. } => "missing_page",
            Error::CorruptFrame { .. } => "corrupt_frame",
            Error::CorruptIndex(_) => "corrupt_index",
            Error::TrailingData { .. } => "trailing_data",
            Error::PageSizeMismatch { .. } => "page_size_mismatch",
            Error::MixedPageSizes { .. } => "mixed_page_sizes",
            Error::NonContiguousTxid { .. } => "non_contiguous_txid",
            Error::NoInputs => "no_inputs",
            Error::Closed => "closed",
        }
    }

    /// True when the bytes are damaged (as opposed to an I/O failure of the reader).
    pub fn is_corruption(&self) -> bool {
        !matches!(self, Error::Io(_) | Error::Closed | Error::NoInputs | Error::PageSizeMismatch { .. })
    }
}
