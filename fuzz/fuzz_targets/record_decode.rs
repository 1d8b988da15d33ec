//! Record decoding with hostile writer schemas: whoever can write to a
//! topic chooses the schema (by the id in the record's own bytes) that every
//! consumer decodes with. Whatever the schema and the bytes, decoding
//! returns (a record, or an error that dead-letters it): no panic, no stack
//! overflow, no allocation beyond `DecodeLimits`, no hang.
//!
//! Input: three parts, each a big-endian u16 length and its bytes: the
//! writer schema registered as id 1, the one registered as id 2, and the
//! key frame (empty: no key); the rest is the value frame. Frames are raw
//! (Confluent magic byte, schema id, Avro body), so the fuzzer also varies
//! magic bytes and ids. Seeds: `seeds/records.py`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use syncline_core::codec::Decoder;
use syncline_core::limits::DecodeLimits;

fn part<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    if rest.len() < 2 {
        let all = *rest;
        *rest = &[];
        return all;
    }
    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let n = n.min(rest.len() - 2);
    let (p, r) = rest[2..].split_at(n);
    *rest = r;
    p
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let schema_1 = String::from_utf8_lossy(part(&mut rest)).into_owned();
    let schema_2 = String::from_utf8_lossy(part(&mut rest)).into_owned();
    let key = part(&mut rest);
    let value = rest;
    let schemas = HashMap::from([(1, schema_1), (2, schema_2)]);
    let decoder = Decoder::with_schemas(schemas, DecodeLimits::default());
    let key = (!key.is_empty()).then_some(key);
    let _ = futures::executor::block_on(decoder.decode(key, Some(value)));
});
