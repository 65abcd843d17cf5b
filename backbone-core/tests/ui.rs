//! Compile-time behaviour of `#[events_contract]`: what compiles (`ui/pass`) and the errors,
//! with their spans, for every kind of mistake (`ui/fail`, checked against the `.stderr` files).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p backbone-core --test ui`
//! and review every changed `.stderr` file.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
