//! What arrives from the broker: job messages and webhook event messages.
//! Decoding never panics, and what decodes encodes back to the same value.
#![no_main]

use infq_common::message::JobMessage;
use infq_common::webhooks::event::{decode_all, encode_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = JobMessage::decode(data) {
        let back = JobMessage::decode(&m.encode()).expect("an encoded message decodes");
        assert_eq!(back.id, m.id);
        assert_eq!(back.inputs.len(), m.inputs.len());
        for (a, b) in m.inputs.iter().zip(&back.inputs) {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        }
    }
    if let Ok(events) = decode_all(data) {
        let again = decode_all(&encode_all(&events)).expect("encoded events decode");
        assert_eq!(again, events);
    }
});
