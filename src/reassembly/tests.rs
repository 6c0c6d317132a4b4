use super::*;
use crate::wire::{PixelFormat, Rect};

fn key(port: u16, id: u64) -> Key {
    Key {
        client: SocketAddr::from(([127, 0, 0, 1], port)),
        request_id: id,
    }
}

fn header(seq: u32, count: u32) -> HeaderRepr {
    HeaderRepr {
        kind: Kind::TextChunk,
        last: seq + 1 == count,
        pipeline: 2,
        request_id: 1,
        seq,
        count,
    }
}

fn text(offset: u32, total_len: u32, bytes: &[u8]) -> Fragment<'_> {
    Fragment::Text {
        repr: TextRepr { offset, total_len },
        bytes,
    }
}

fn limits() -> Limits {
    Limits {
        reassembly_timeout_ms: 100,
        ..Limits::default()
    }
}

#[test]
fn completes_in_any_order_and_ignores_duplicates() {
    let t0 = Instant::now();
    let mut r = Reassembler::new(&limits());
    let k = key(1, 1);
    assert!(matches!(
        r.accept(k, &header(2, 3), 1, 40, text(4, 6, b"ef"), t0),
        Ok(Outcome::Pending)
    ));
    assert!(r.is_duplicate(&k, 2));
    assert!(matches!(
        r.accept(k, &header(2, 3), 1, 40, text(4, 6, b"zz"), t0),
        Ok(Outcome::Duplicate)
    ));
    assert!(matches!(
        r.accept(k, &header(0, 3), 1, 40, text(0, 6, b"ab"), t0),
        Ok(Outcome::Pending)
    ));
    assert_eq!(r.in_flight(), (1, 80));
    let done = match r.accept(k, &header(1, 3), 1, 40, text(2, 6, b"cd"), t0) {
        Ok(Outcome::Complete(req)) => req,
        other => panic!("{other:?}"),
    };
    // Still in flight until answered.
    assert_eq!(r.in_flight(), (1, 120));
    assert_eq!(r.reassembling(), 0);
    r.finish(&done, t0);
    assert_eq!(r.in_flight(), (0, 0));
    assert!(r.is_answered(&k, t0));
    match &done.body {
        Body::Text(t) => {
            let got: Vec<_> = t
                .parts
                .iter()
                .map(|p| (p.offset, t.bytes(p).to_vec()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (4, b"ef".to_vec()),
                    (0, b"ab".to_vec()),
                    (2, b"cd".to_vec())
                ]
            );
        }
        _ => panic!(),
    }
}

#[test]
fn timeout_expires_and_remembers_key() {
    let t0 = Instant::now();
    let mut r = Reassembler::new(&limits());
    let k = key(1, 7);
    r.accept(k, &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
        .unwrap();
    let mut out = Vec::new();
    r.expire(t0 + Duration::from_millis(99), &mut out);
    assert!(out.is_empty());
    assert_eq!(r.next_deadline(), Some(t0 + Duration::from_millis(100)));
    r.expire(t0 + Duration::from_millis(100), &mut out);
    assert_eq!(out, vec![k]);
    assert_eq!(r.in_flight(), (0, 0));
    assert!(r.is_answered(&k, t0 + Duration::from_millis(150)));
    // Remembered for at least the timeout, then forgotten.
    assert!(!r.is_answered(&k, t0 + Duration::from_secs(10)));
}

#[test]
fn completed_request_does_not_expire() {
    let t0 = Instant::now();
    let mut r = Reassembler::new(&limits());
    let k = key(1, 7);
    let Ok(Outcome::Complete(req)) = r.accept(k, &header(0, 1), 1, 40, text(0, 2, b"ab"), t0)
    else {
        panic!()
    };
    r.finish(&req, t0);
    let mut out = Vec::new();
    r.expire(t0 + Duration::from_secs(1), &mut out);
    assert!(out.is_empty());
}

#[test]
fn inconsistent_fragments_are_malformed() {
    let t0 = Instant::now();
    let mut r = Reassembler::new(&limits());
    let k = key(1, 1);
    r.accept(k, &header(0, 3), 1, 40, text(0, 6, b"ab"), t0)
        .unwrap();
    assert_eq!(
        r.accept(k, &header(1, 3), 1, 40, text(2, 7, b"cd"), t0)
            .unwrap_err(),
        Reject::Malformed("total_len differs between fragments")
    );
    assert_eq!(r.in_flight(), (0, 0));
    assert!(r.is_answered(&k, t0));

    let k = key(1, 2);
    r.accept(k, &header(0, 3), 1, 40, text(0, 6, b"ab"), t0)
        .unwrap();
    assert!(r
        .accept(k, &header(1, 4), 1, 40, text(2, 6, b"cd"), t0)
        .is_err());

    let k = key(1, 3);
    let img = |w: u16, fmt| Fragment::Image {
        repr: ImageRepr {
            width: w,
            height: 2,
            pixel_format: fmt,
            rect: Rect::new(0, 0, 1, 1),
            out_rect: None,
        },
        pixels: &[0, 0, 0],
    };
    let h = |seq| HeaderRepr {
        kind: Kind::ImageRows,
        last: false,
        pipeline: 1,
        request_id: 3,
        seq,
        count: 4,
    };
    r.accept(k, &h(0), 0, 60, img(2, PixelFormat::Rgb8), t0)
        .unwrap();
    assert!(r
        .accept(k, &h(1), 0, 60, img(3, PixelFormat::Rgb8), t0)
        .is_err());
    let k = key(1, 4);
    r.accept(k, &h(0), 0, 60, img(2, PixelFormat::Rgb8), t0)
        .unwrap();
    assert!(r
        .accept(k, &h(1), 0, 60, img(2, PixelFormat::Bgr8), t0)
        .is_err());
}

#[test]
fn limits_shed_new_requests() {
    let t0 = Instant::now();
    let l = Limits {
        max_requests_in_flight: 2,
        max_requests_per_source: 10,
        ..limits()
    };
    let mut r = Reassembler::new(&l);
    r.accept(key(1, 1), &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
        .unwrap();
    r.accept(key(2, 1), &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
        .unwrap();
    assert_eq!(
        r.accept(key(3, 1), &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
            .unwrap_err(),
        Reject::Overloaded("max_requests_in_flight reached")
    );
    // Fragments of requests in flight still go in.
    assert!(matches!(
        r.accept(key(1, 1), &header(1, 2), 1, 40, text(2, 4, b"cd"), t0),
        Ok(Outcome::Complete(_))
    ));

    let l = Limits {
        max_bytes_in_flight: 100,
        ..limits()
    };
    let mut r = Reassembler::new(&l);
    r.accept(key(1, 1), &header(0, 3), 1, 60, text(0, 6, b"ab"), t0)
        .unwrap();
    assert_eq!(
        r.accept(key(2, 1), &header(0, 3), 1, 60, text(0, 6, b"ab"), t0)
            .unwrap_err(),
        Reject::Overloaded("max_bytes_in_flight reached")
    );
    // A request that grows past the byte limit is shed too.
    assert!(matches!(
        r.accept(key(1, 1), &header(1, 3), 1, 60, text(2, 6, b"cd"), t0)
            .unwrap_err(),
        Reject::Overloaded(_)
    ));
    assert_eq!(r.in_flight(), (0, 0));

    let l = Limits {
        max_requests_per_source: 1,
        ..limits()
    };
    let mut r = Reassembler::new(&l);
    r.accept(key(1, 1), &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
        .unwrap();
    assert_eq!(
        r.accept(key(1, 2), &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
            .unwrap_err(),
        Reject::Overloaded("max_requests_per_source reached")
    );
    r.accept(key(2, 2), &header(0, 2), 1, 40, text(0, 4, b"ab"), t0)
        .unwrap();
}

#[test]
fn answered_keys_are_bounded() {
    let t0 = Instant::now();
    let mut a = AnsweredKeys::new(3, Duration::from_secs(1));
    for i in 0..5 {
        a.insert(key(1, i), t0);
    }
    assert_eq!(a.len(), 3);
    assert_eq!(a.evicted(), 2);
    assert!(!a.contains(&key(1, 0), t0));
    assert!(a.contains(&key(1, 4), t0));
}
