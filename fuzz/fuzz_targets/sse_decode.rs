//! The SSE decoder over an upstream stream cut into arbitrary reads: never a panic, and the
//! events do not depend on where the reads were cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::api::sse::Decoder;

fn events(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
    let mut d = Decoder::default();
    let mut out = vec![];
    for c in chunks {
        d.push(c);
        loop {
            match d.next_event() {
                Ok(Some(e)) => out.push(Ok(e.data.to_vec())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    if let Some(e) = d.finish() {
        out.push(Ok(e.data.to_vec()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(data.len());
    let whole = events(&[data]);
    let split = events(&[&data[..at], &data[at..]]);
    if whole.iter().all(Result::is_ok) && split.iter().all(Result::is_ok) {
        assert_eq!(whole, split);
    }
});
