use super::*;
use crate::wire::{PixelFormat, Rect};

/// A test body: records fragments; rejects a changed total_len or image
/// geometry, as the pipeline's state does.
#[derive(Debug, Default)]
struct Log {
    text: Vec<(u32, Vec<u8>)>,
    total_len: Option<u32>,
    geometry: Option<(u16, u16, PixelFormat)>,
    held: usize,
}

impl Assembly for Log {
    fn add(&mut self, f: &Fragment<'_>) -> Result<(), Reject> {
        match f {
            Fragment::Text { repr, bytes } => {
                if *self.total_len.get_or_insert(repr.total_len) != repr.total_len {
                    return Err(Reject::malformed("total_len differs between fragments"));
                }
                self.text.push((repr.offset, bytes.to_vec()));
                self.held += bytes.len();
            }
            Fragment::Image { repr, .. } => {
                let g = (repr.width, repr.height, repr.pixel_format);
                if *self.geometry.get_or_insert(g) != g {
                    return Err(Reject::malformed("geometry differs"));
                }
            }
        }
        Ok(())
    }
    fn held_bytes(&self) -> usize {
        self.held
    }
}

type R = Reassembler<Log>;

fn acc(
    r: &mut R,
    k: Key,
    h: &HeaderRepr,
    len: usize,
    f: Fragment<'_>,
    now: Instant,
) -> Result<Outcome<Log>, Reject> {
    r.accept(k, h, len, f, now, |_| Ok(Log::default()))
}

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
    let mut r = R::new(&limits());
    let k = key(1, 1);
    assert!(matches!(
        acc(&mut r, k, &header(2, 3), 40, text(4, 6, b"ef"), t0),
        Ok(Outcome::Pending)
    ));
    assert!(r.is_duplicate(&k, 2));
    assert!(matches!(
        acc(&mut r, k, &header(2, 3), 40, text(4, 6, b"zz"), t0),
        Ok(Outcome::Duplicate)
    ));
    assert!(matches!(
        acc(&mut r, k, &header(0, 3), 40, text(0, 6, b"ab"), t0),
        Ok(Outcome::Pending)
    ));
    assert_eq!(r.in_flight(), (1, 80));
    let done = match acc(&mut r, k, &header(1, 3), 40, text(2, 6, b"cd"), t0) {
        Ok(Outcome::Complete(req)) => req,
        other => panic!("{other:?}"),
    };
    // Still in flight until answered.
    assert_eq!(r.in_flight(), (1, 120));
    assert_eq!(r.reassembling(), 0);
    r.finish(done.release(), t0);
    assert_eq!(r.in_flight(), (0, 0));
    assert!(r.is_answered(&k, t0));
    assert_eq!(
        done.body.text,
        vec![
            (4, b"ef".to_vec()),
            (0, b"ab".to_vec()),
            (2, b"cd".to_vec())
        ]
    );
}

#[test]
fn timeout_expires_and_remembers_key() {
    let t0 = Instant::now();
    let mut r = R::new(&limits());
    let k = key(1, 7);
    acc(&mut r, k, &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap();
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
    let mut r = R::new(&limits());
    let k = key(1, 7);
    let Ok(Outcome::Complete(req)) = acc(&mut r, k, &header(0, 1), 40, text(0, 2, b"ab"), t0)
    else {
        panic!()
    };
    r.finish(req.release(), t0);
    let mut out = Vec::new();
    r.expire(t0 + Duration::from_secs(1), &mut out);
    assert!(out.is_empty());
}

#[test]
fn inconsistent_fragments_are_malformed() {
    let t0 = Instant::now();
    let mut r = R::new(&limits());
    let k = key(1, 1);
    acc(&mut r, k, &header(0, 3), 40, text(0, 6, b"ab"), t0).unwrap();
    assert_eq!(
        acc(&mut r, k, &header(1, 3), 40, text(2, 7, b"cd"), t0).unwrap_err(),
        Reject::malformed("total_len differs between fragments")
    );
    assert_eq!(r.in_flight(), (0, 0));
    assert!(r.is_answered(&k, t0));

    let k = key(1, 2);
    acc(&mut r, k, &header(0, 3), 40, text(0, 6, b"ab"), t0).unwrap();
    assert!(acc(&mut r, k, &header(1, 4), 40, text(2, 6, b"cd"), t0).is_err());

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
    acc(&mut r, k, &h(0), 60, img(2, PixelFormat::Rgb8), t0).unwrap();
    assert!(acc(&mut r, k, &h(1), 60, img(3, PixelFormat::Rgb8), t0).is_err());
    let k = key(1, 4);
    acc(&mut r, k, &h(0), 60, img(2, PixelFormat::Rgb8), t0).unwrap();
    assert!(acc(&mut r, k, &h(1), 60, img(2, PixelFormat::Bgr8), t0).is_err());
}

#[test]
fn limits_shed_new_requests() {
    let t0 = Instant::now();
    let l = Limits {
        max_requests_in_flight: 2,
        max_requests_per_source: 10,
        ..limits()
    };
    let mut r = R::new(&l);
    acc(&mut r, key(1, 1), &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap();
    acc(&mut r, key(2, 1), &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap();
    assert_eq!(
        acc(&mut r, key(3, 1), &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap_err(),
        Reject::overloaded("max_requests_in_flight reached")
    );
    // Fragments of requests in flight still go in.
    assert!(matches!(
        acc(&mut r, key(1, 1), &header(1, 2), 40, text(2, 4, b"cd"), t0),
        Ok(Outcome::Complete(_))
    ));

    let l = Limits {
        max_bytes_in_flight: 100,
        ..limits()
    };
    let mut r = R::new(&l);
    acc(&mut r, key(1, 1), &header(0, 3), 60, text(0, 6, b"ab"), t0).unwrap();
    assert_eq!(
        acc(&mut r, key(2, 1), &header(0, 3), 60, text(0, 6, b"ab"), t0).unwrap_err(),
        Reject::overloaded("max_bytes_in_flight reached")
    );
    // A request that grows past the byte limit is shed too.
    assert!(matches!(
        acc(&mut r, key(1, 1), &header(1, 3), 60, text(2, 6, b"cd"), t0).unwrap_err(),
        Reject {
            code: ErrorCode::Overloaded,
            ..
        }
    ));
    assert_eq!(r.in_flight(), (0, 0));

    let l = Limits {
        max_requests_per_source: 1,
        ..limits()
    };
    let mut r = R::new(&l);
    acc(&mut r, key(1, 1), &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap();
    assert_eq!(
        acc(&mut r, key(1, 2), &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap_err(),
        Reject::overloaded("max_requests_per_source reached")
    );
    acc(&mut r, key(2, 2), &header(0, 2), 40, text(0, 4, b"ab"), t0).unwrap();
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
