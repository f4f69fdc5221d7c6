//! Decoders never allocate on the word of an untrusted count: the largest
//! single allocation made while decoding a frame is bounded by a small
//! multiple of the frame's size, however large the counts and lengths it
//! claims. Measured with a counting allocator, so this file holds one test
//! and tracks only its own thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use ringmq_protocol::*;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKING.with(Cell::get) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACKING.with(Cell::get) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Largest single allocation while decoding `frame` as a request and as a
/// response of every api.
fn largest_allocation_decoding(frame: &Bytes) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    TRACKING.with(|t| t.set(true));
    let _ = Request::decode_frame(frame.clone());
    if let Ok(h) = RequestHeader::parse(frame) {
        // As the broker would, with whatever body bytes are there.
        let _ = Request::decode(&h, frame.slice(REQUEST_HEADER_LEN..));
    }
    for api in ApiKey::ALL {
        let _ = Response::decode_frame(api, frame.clone());
        if let Ok(h) = ResponseHeader::parse(frame) {
            let _ = Response::decode(api, &h, frame.slice(RESPONSE_HEADER_LEN..));
        }
    }
    TRACKING.with(|t| t.set(false));
    LARGEST.load(Ordering::Relaxed)
}

/// A decoded item may be larger in memory than on the wire (a `String` is 24
/// bytes, an empty `str` 2), so allow a fixed ratio, never the claimed count.
fn bound(frame: &Bytes) -> usize {
    16 * frame.len() + 1024
}

fn request_frame(api: u16, body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32_le(8 + body.len() as u32);
    b.put_u16_le(api);
    b.put_u16_le(0);
    b.put_u32_le(1);
    b.put_slice(body);
    b.freeze()
}

fn response_frame(body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32_le(6 + body.len() as u32);
    b.put_u32_le(1);
    b.put_u16_le(0);
    b.put_slice(body);
    b.freeze()
}

/// Bodies that claim far more than they hold.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let max = u32::MAX.to_le_bytes();
    let big = (limits::MAX_ARRAY_LEN as u32).to_le_bytes();
    let mut v = vec![
        [&[1u8][..], &max].concat(),         // Metadata: Some([str; 4G])
        [&[1u8][..], &big].concat(),         // Metadata: Some([str; MAX_ARRAY_LEN])
        max.to_vec(),                        // any array of 4G items
        big.to_vec(),                        // an array at the cap with no items
        [&big[..], &[0u8; 64][..]].concat(), // an array at the cap, 64 bytes of items
        vec![0xff, 0xff],                    // str of 65535 bytes, none present
        [&[1, 0, b't', 0, 0, 0, 0, 1, 0, 0, 0, 0][..], &max].concat(), // Produce: batch of 4 GiB
        [&[0u8; 16][..], &max].concat(),     // Fetch response: records of 4 GiB
    ];
    // Metadata response: one broker count claiming everything, then topics.
    v.push([&1u32.to_le_bytes()[..], &[0, 0, 0, 0, 0xff, 0xff][..], &max].concat());
    // Many genuine tiny items: the honest worst case of expansion.
    let mut many = vec![1u8];
    many.extend_from_slice(&4096u32.to_le_bytes());
    many.resize(many.len() + 2 * 4096, 0);
    v.push(many);
    v
}

#[test]
fn decoding_never_allocates_beyond_the_frame() {
    let mut frames = Vec::new();
    for body in hostile_bodies() {
        for api in 0..8 {
            frames.push(request_frame(api, &body));
        }
        frames.push(response_frame(&body));
    }
    // Pseudo-random frames with a valid header, so the body decoders run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000 {
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        frames.push(request_frame((i % 8) as u16, &body));
        frames.push(response_frame(&body));
    }
    for frame in &frames {
        let largest = largest_allocation_decoding(frame);
        assert!(
            largest <= bound(frame),
            "decoding {} bytes allocated {largest} at once: {:02x?}",
            frame.len(),
            &frame[..frame.len().min(32)]
        );
    }
}
