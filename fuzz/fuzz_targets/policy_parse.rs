//! Policy parsing and validation: any text either compiles or gives located errors, never a
//! panic (or a stack overflow on deep nesting).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Err(errors) = switchyard::policy::parse(text, "fuzz.yaml", &env) {
        assert!(!errors.to_string().is_empty());
    }
});
