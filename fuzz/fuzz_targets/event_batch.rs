#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ingress_egress_fuzz::event_batch(data));
