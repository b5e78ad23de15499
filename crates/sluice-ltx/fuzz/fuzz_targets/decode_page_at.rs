//! Random access on arbitrary bytes: locating the index from the tail and decoding any
//! frame it names must return errors, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_ltx::index::{decode_page_frame, index_from_tail, parse_index, TailIndex};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let tail = &data[data.len().saturating_sub(4096)..];
    let entries = match index_from_tail(len, tail) {
        Ok(TailIndex::Complete(e, _)) => e,
        Ok(TailIndex::NeedRange(loc)) => match parse_index(&data[loc.range.start as usize..loc.range.end as usize]) {
            Ok(e) => e,
            Err(_) => return,
        },
        Err(_) => return,
    };
    let ps = if data.len() > 12 { u32::from_be_bytes([data[8], data[9], data[10], data[11]]) } else { 4096 };
    let ps = if ps.is_power_of_two() && (512..=65536).contains(&ps) { ps } else { 4096 };
    let mut out = vec![0u8; ps as usize];
    for e in entries.iter().take(64) {
        let (Ok(s), Ok(n)) = (usize::try_from(e.offset), usize::try_from(e.size)) else { continue };
        if let Some(frame) = s.checked_add(n).and_then(|end| data.get(s..end)) {
            let _ = decode_page_frame(frame, &mut out);
        }
    }
    // Also treat the whole input as one frame.
    let _ = decode_page_frame(data, &mut out);
});
