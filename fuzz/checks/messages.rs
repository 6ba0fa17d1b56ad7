//! What arrives from the broker: job messages, their message ids and
//! webhook event messages, all untrusted. Decoding never panics, a decoded
//! value is within every range the decoder promises, and what decodes
//! encodes back to the same message, bit for bit.
//!
//! The check itself: the fuzz target `messages` runs it on what libFuzzer
//! makes, `tests/fuzz_inputs.rs` on the kept inputs on every test run.
use infq_common::message::{JobMessage, MessageId, MAX_EPOCH_MS, MAX_RETRIES};
use infq_common::webhooks::event::{decode_all, encode_all};

/// Checks one input; panics on a broken invariant.
pub fn check(data: &[u8]) {
    if let Ok(m) = JobMessage::decode(data) {
        assert!(m.created_at_ms <= MAX_EPOCH_MS && m.retries <= MAX_RETRIES);
        assert!(m.inputs.iter().all(|v| v.is_finite()) && !m.inputs.is_empty());
        let bytes = m.encode();
        let back = JobMessage::decode(&bytes).expect("an encoded message decodes");
        assert_eq!(back, m);
        for (a, b) in m.inputs.iter().zip(&back.inputs) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(back.encode(), bytes, "encoding is stable");
        assert_eq!(back.digest(), m.digest());
        let id = m.message_id();
        assert_eq!(MessageId::parse(&id.to_string()), Some(id));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(id) = MessageId::parse(text) {
            assert_eq!(MessageId::parse(&id.to_string()), Some(id));
        }
    }
    if let Ok(events) = decode_all(data) {
        let again = decode_all(&encode_all(&events)).expect("encoded events decode");
        assert_eq!(again, events);
    }
}
