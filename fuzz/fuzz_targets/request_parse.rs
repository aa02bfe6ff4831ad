//! Chat request parsing and the features routing reads from it: any bytes either parse or
//! give a 4xx error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::api::ChatRequest;

fuzz_target!(|data: &[u8]| {
    match ChatRequest::parse(data) {
        Ok(req) => {
            let _ = req.messages();
            let _ = switchyard::features::extract(&req, Some("tenant"), Some("a,b"));
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
});
