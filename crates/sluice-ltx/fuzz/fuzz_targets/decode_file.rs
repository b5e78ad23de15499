//! Any bytes decode to Ok or Err, never a panic; a file that verifies re-encodes to one that
//! verifies with the same pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_ltx::{verify, Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    if verify(data).is_err() {
        return;
    }
    let mut dec = Decoder::new(data).expect("verified file has a header");
    let h = *dec.header();
    let mut enc = Encoder::new(Vec::new(), h).expect("verified header encodes");
    let mut buf = vec![0u8; h.page_size as usize];
    while let Some(p) = dec.next_page(&mut buf).expect("verified file decodes") {
        enc.encode_page(p, &buf).expect("verified page re-encodes");
    }
    let post = dec.trailer().expect("trailer").post_apply_checksum;
    let (out, _) = enc.finish(post).expect("finish");
    let a = verify(data).unwrap();
    let b = verify(&out[..]).expect("re-encoded file verifies");
    assert_eq!(a.pgnos, b.pgnos);
    assert_eq!(a.header, b.header);
});
