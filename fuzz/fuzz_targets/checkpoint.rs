#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triscope_fuzz::targets::checkpoint(data));
