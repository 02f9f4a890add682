//! libFuzzer target: the conditions harness (`harness::check(Target::Conditions, ..)`), with the
//! harness's grammar-aware mutator alongside libFuzzer's own mutations.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

use harness::Target;
use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};

fuzz_target!(|data: &[u8]| harness::fuzz_one(Target::Conditions, data));

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    harness::mutate::custom(
        Target::Conditions,
        data,
        size,
        max_size,
        seed,
        fuzzer_mutate,
    )
});
