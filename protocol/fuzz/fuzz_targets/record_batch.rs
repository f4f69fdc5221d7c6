//! Record batches: `batches` over a record set, `verify`/`verify_one`
//! (`BatchHeader::parse` + CRC) and `decode_records`. Never panics. Because
//! the fuzzer cannot forge a CRC, every input is also tried with its
//! `batch_length` and CRC fixed up, so the record decoder sees it. Whatever
//! decodes is rebuilt with `BatchBuilder` and must decode to the same
//! records and header.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringmq_protocol::batch::{
    batches, compute_crc, decode_records, stamp, verify, verify_one, BatchBuilder, BatchHeader,
    ProducerStamp, BATCH_HEADER_LEN, MAX_BATCH_BYTES,
};

fn round_trip(batch: &Bytes) {
    let Ok(records) = decode_records(batch) else {
        return;
    };
    let h = verify(batch).expect("decoded batch verifies");
    assert_eq!(records.len(), h.record_count as usize);
    let mut b = BatchBuilder::with_capacity(h.first_timestamp, batch.len());
    for r in &records {
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.headers);
    }
    let rebuilt = b.finish(Some(ProducerStamp {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
    }));
    let mut raw = rebuilt.to_vec();
    stamp(&mut raw, h.base_offset, h.leader_epoch);
    let rebuilt = Bytes::from(raw);
    let h2 = verify_one(&rebuilt).expect("rebuilt batch verifies");
    let again = decode_records(&rebuilt).expect("rebuilt batch decodes");
    // BatchBuilder numbers offsets 0..n and recomputes max_timestamp, so
    // those are the only fields that may differ.
    let strip = |h: BatchHeader| BatchHeader {
        crc: 0,
        batch_length: 0,
        max_timestamp: 0,
        ..h
    };
    assert_eq!(strip(h2), strip(h));
    assert_eq!(again.len(), records.len());
    for (i, (a, r)) in again.iter().zip(&records).enumerate() {
        assert_eq!(a.offset, h.base_offset.wrapping_add(i as u64));
        assert_eq!(
            (a.timestamp, &a.key, &a.value, &a.headers),
            (r.timestamp, &r.key, &r.value, &r.headers),
            "record {i} does not round-trip"
        );
    }
}

fn check(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let _ = verify_one(&buf);
    let _ = decode_records(&buf);
    for b in batches(&buf) {
        if let Ok(b) = b {
            verify_one(&b).expect("a batch from batches() verifies alone");
            round_trip(&b);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // With batch_length and CRC fixed up: the record decoder's real input.
    if (BATCH_HEADER_LEN..=MAX_BATCH_BYTES).contains(&data.len()) {
        let mut raw = data.to_vec();
        let batch_length = (raw.len() - 12) as u32;
        raw[8..12].copy_from_slice(&batch_length.to_le_bytes());
        let crc = compute_crc(&raw);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        check(&raw);
    }
});
