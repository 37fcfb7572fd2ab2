//! The chunk assembler receiving a parameter stream: the input's first two bytes are the number
//! of values the layout holds, the rest length-delimited `Chunk` messages as they come off the
//! wire. The assembler returns exactly the values sent, in order, or an error; it never panics
//! and never holds more than the layout.
#![no_main]

use entente_proto::chunks::Assembler;
use entente_proto::v1::Chunk;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let expected = usize::from(u16::from_le_bytes(*head));
    let mut assembler = Assembler::new(expected);
    let mut sent = Vec::new();
    while !rest.is_empty() {
        let Ok(chunk) = Chunk::decode_length_delimited(&mut rest) else {
            return;
        };
        if assembler.push(&chunk).is_err() {
            return;
        }
        sent.extend(
            chunk
                .values
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    if let Ok(values) = assembler.finish() {
        assert_eq!(values.len(), expected);
        let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, sent);
    }
});
