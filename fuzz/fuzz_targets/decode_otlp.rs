#![no_main]
//! See `apm_rs::fuzzing::decode_otlp` for the input format and the invariants checked.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apm_rs::fuzzing::decode_otlp(data));
