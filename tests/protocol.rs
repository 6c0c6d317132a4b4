//! The proxy core against every rule of the spec, deterministically: no
//! sockets, the clock passed in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tensorwire::client::{
    image_rows, image_tiles, text_chunks, tile_grid, OutputGeometry, RawImage,
};
use tensorwire::config::Config;
use tensorwire::proxy::Proxy;
use tensorwire::wire::{
    ErrorCode, ErrorPacket, ErrorRepr, Kind, Packet, PixelFormat, ResponsePacket, ResponseRepr,
};

type Out = Vec<(SocketAddr, Vec<u8>)>;

fn client() -> SocketAddr {
    "10.9.0.2:40000".parse().unwrap()
}

fn proxy_with(edit: impl FnOnce(&mut Config)) -> Proxy {
    let mut cfg = Config::builtin();
    edit(&mut cfg);
    cfg.validate().unwrap();
    cfg.build_proxy().unwrap()
}

fn proxy() -> Proxy {
    proxy_with(|_| {})
}

fn send(p: &mut Proxy, now: Instant, datagrams: &[Vec<u8>]) -> Out {
    let mut out = Out::new();
    for d in datagrams {
        p.handle(now, client(), d, &mut out);
    }
    out
}

/// The single ERROR in `out`: (code, request_id, pipeline).
fn error_of(out: &Out) -> (ErrorCode, u64, u16) {
    assert_eq!(
        out.len(),
        1,
        "expected exactly one reply, got {}",
        out.len()
    );
    let p = Packet::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(p.kind(), Some(Kind::Error), "not an ERROR");
    assert_eq!((p.seq(), p.count()), (0, 1));
    let e = ErrorPacket::new_checked(p.body()).unwrap();
    let r = ErrorRepr::parse(&e).unwrap();
    (r.code, p.request_id(), p.pipeline())
}

fn code(out: &Out) -> ErrorCode {
    error_of(out).0
}

fn small_image(w: u32, h: u32, format: PixelFormat) -> RawImage {
    let n = (w * h) as usize * format.channels();
    RawImage {
        width: w,
        height: h,
        format,
        data: (0..n).map(|i| (i * 7 % 251) as u8).collect(),
    }
}

fn set_u16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn set_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Reassembles RESPONSE fragments; checks their headers on the way.
fn response_body(out: &Out, request_id: u64) -> (u16, usize, Vec<u8>) {
    let mut body = Vec::new();
    let mut meta = None;
    for (i, (_, d)) in out.iter().enumerate() {
        let p = Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.kind(), Some(Kind::Response));
        assert_eq!(p.request_id(), request_id);
        assert_eq!(p.seq() as usize, i);
        assert_eq!(p.count() as usize, out.len());
        assert_eq!(p.flags() & 1 == 1, i + 1 == out.len(), "LAST flag");
        assert!(d.len() <= 1472);
        let r = ResponseRepr::parse(&ResponsePacket::new_checked(p.body()).unwrap()).unwrap();
        assert_eq!(r.offset as usize, body.len());
        body.extend_from_slice(ResponsePacket::new_checked(p.body()).unwrap().bytes());
        meta = Some((r.content_type, r.header_len as usize, r.total_len as usize));
    }
    let (ct, hl, total) = meta.expect("at least one fragment");
    assert_eq!(total, body.len());
    (ct, hl, body)
}

#[test]
fn describe_answers_json() {
    let mut p = proxy();
    let mut d = vec![0u8; 24];
    d[..4].copy_from_slice(&[0x54, 0x57, 1, 4]);
    set_u32(&mut d, 20, 1);
    d[8..16].copy_from_slice(&77u64.to_be_bytes());
    let out = send(&mut p, Instant::now(), &[d.clone()]);
    let (ct, hl, body) = response_body(&out, 77);
    assert_eq!((ct, hl), (1, 0));
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["protocol"], 1);
    assert_eq!(j["pipelines"][0]["image"]["width"], 224);
    // DESCRIBE with a pipeline is malformed.
    set_u16(&mut d, 6, 1);
    d[8..16].copy_from_slice(&78u64.to_be_bytes());
    assert_eq!(
        code(&send(&mut p, Instant::now(), &[d])),
        ErrorCode::Malformed
    );
}

#[test]
fn not_twp_and_short_and_reply_kinds_are_dropped_silently() {
    let mut p = proxy();
    let now = Instant::now();
    assert!(send(
        &mut p,
        now,
        &[b"GET / HTTP/1.1\r\n".to_vec(), vec![], vec![0x54]]
    )
    .is_empty());
    assert!(send(&mut p, now, &[vec![0x54, 0x57, 1, 1, 0, 0, 0, 1]]).is_empty());
    let mut resp = vec![0u8; 40];
    resp[..4].copy_from_slice(&[0x54, 0x57, 1, 0x81]);
    assert!(send(&mut p, now, &[resp]).is_empty());
    let s = p.stats();
    assert_eq!(s.dropped_not_twp, 3);
    assert_eq!(s.dropped_truncated, 1);
    assert_eq!(s.dropped_reply_kind, 1);
}

#[test]
fn each_error_code_and_the_fields_it_copies() {
    let now = Instant::now();
    let img = small_image(8, 4, PixelFormat::Rgb8);
    let rows = |id| image_rows(&img, 1, id, 1472);

    // UNSUPPORTED_VERSION, with request_id and pipeline read at v1 offsets.
    let mut d = rows(5)[0].clone();
    d[2] = 2;
    let mut p = proxy();
    assert_eq!(
        error_of(&send(&mut p, now, &[d])),
        (ErrorCode::UnsupportedVersion, 5, 1)
    );

    // UNKNOWN_PIPELINE (99, and 0 on a data kind).
    for pid in [99u16, 0] {
        let mut d = rows(6)[0].clone();
        set_u16(&mut d, 6, pid);
        assert_eq!(
            error_of(&send(&mut proxy(), now, &[d])),
            (ErrorCode::UnknownPipeline, 6, pid)
        );
    }

    // KIND_MISMATCH: text to the image pipeline, image to the text one.
    let t = text_chunks(b"hello", 1, 7, 1472, 0);
    assert_eq!(code(&send(&mut proxy(), now, &t)), ErrorCode::KindMismatch);
    let i = image_rows(&img, 2, 8, 1472);
    assert_eq!(code(&send(&mut proxy(), now, &i)), ErrorCode::KindMismatch);
    // ... and a pixel format the pipeline does not list.
    let mut p = proxy_with(|c| {
        c.pipelines[0].image.as_mut().unwrap().pixel_formats = vec![PixelFormat::Rgb8]
    });
    let bgr = image_rows(&small_image(8, 4, PixelFormat::Bgr8), 1, 9, 1472);
    assert_eq!(code(&send(&mut p, now, &bgr)), ErrorCode::KindMismatch);

    // TOO_LARGE: fragments, pixels, text bytes.
    let mut p = proxy_with(|c| {
        c.limits.max_fragments = 2;
        c.limits.max_image_pixels = 31;
        c.limits.max_text_bytes = 4;
    });
    let many = image_rows(&small_image(2, 1, PixelFormat::Rgb8), 1, 10, 1472);
    let mut d = many[0].clone();
    set_u32(&mut d, 20, 3);
    assert_eq!(code(&send(&mut p, now, &[d])), ErrorCode::TooLarge);
    assert_eq!(
        code(&send(&mut p, now, &rows(11)[..1])),
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(&send(&mut p, now, &text_chunks(b"hello", 2, 12, 1472, 0))),
        ErrorCode::TooLarge
    );

    // OVERLOADED: a second request while one is in flight.
    let mut p = proxy_with(|c| c.limits.max_requests_in_flight = 1);
    let a = text_chunks(&[b'a'; 3000], 2, 13, 1472, 0);
    assert!(send(&mut p, now, &a[..1]).is_empty());
    let b = text_chunks(b"hello", 2, 14, 1472, 0);
    assert_eq!(
        error_of(&send(&mut p, now, &b)),
        (ErrorCode::Overloaded, 14, 2)
    );

    // INCOMPLETE after the reassembly timeout.
    let mut out = Out::new();
    p.on_timeout(now + Duration::from_millis(249), &mut out);
    assert!(out.is_empty());
    assert_eq!(p.next_deadline(), Some(now + Duration::from_millis(250)));
    p.on_timeout(now + Duration::from_millis(250), &mut out);
    assert_eq!(error_of(&out).0, ErrorCode::Incomplete);
    assert_eq!(error_of(&out).1, 13);
    assert_eq!(p.stats().requests_in_flight, 0);

    // INVALID_CONTENT: bytes that are not UTF-8.
    let bad = text_chunks(b"ok \xff\xfe", 2, 15, 1472, 0);
    assert_eq!(
        code(&send(&mut proxy(), now, &bad)),
        ErrorCode::InvalidContent
    );
}

#[test]
fn malformed_fields() {
    let now = Instant::now();
    let img = small_image(8, 4, PixelFormat::Rgb8);
    let d0 = image_rows(&img, 1, 20, 1472)[0].clone();
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("short header", Box::new(|d| d.truncate(20))),
        ("count 0", Box::new(|d| set_u32(d, 20, 0))),
        ("seq >= count", Box::new(|d| set_u32(d, 16, 1))),
        ("unknown kind", Box::new(|d| d[3] = 9)),
        ("image header truncated", Box::new(|d| d.truncate(40))),
        ("reserved byte", Box::new(|d| d[29] = 1)),
        ("reserved u16", Box::new(|d| set_u16(d, 46, 1))),
        ("rows with out_w", Box::new(|d| set_u16(d, 42, 1))),
        (
            "pixels short",
            Box::new(|d| {
                d.pop();
            }),
        ),
        ("pixels long", Box::new(|d| d.push(0))),
        ("rect outside", Box::new(|d| set_u16(d, 30, 1))),
        ("zero width image", Box::new(|d| set_u16(d, 24, 0))),
        ("unknown pixel format", Box::new(|d| d[28] = 9)),
        ("over max_datagram", Box::new(|d| d.resize(1500, 0))),
    ];
    for (name, edit) in cases {
        let mut d = d0.clone();
        edit(&mut d);
        let out = send(&mut proxy(), now, &[d]);
        assert_eq!(code(&out), ErrorCode::Malformed, "{name}");
    }
}

#[test]
fn error_precedence_follows_the_spec() {
    let now = Instant::now();
    let img = small_image(8, 4, PixelFormat::Rgb8);
    let d0 = image_rows(&img, 1, 30, 1472)[0].clone();
    // version beats unknown pipeline
    let mut d = d0.clone();
    d[2] = 3;
    set_u16(&mut d, 6, 99);
    assert_eq!(
        code(&send(&mut proxy(), now, &[d])),
        ErrorCode::UnsupportedVersion
    );
    // unknown pipeline beats malformed
    let mut d = d0.clone();
    set_u16(&mut d, 6, 99);
    d[29] = 1;
    assert_eq!(
        code(&send(&mut proxy(), now, &[d])),
        ErrorCode::UnknownPipeline
    );
    // kind mismatch beats malformed
    let mut d = d0.clone();
    set_u16(&mut d, 6, 2);
    d[29] = 1;
    assert_eq!(
        code(&send(&mut proxy(), now, &[d])),
        ErrorCode::KindMismatch
    );
    // malformed beats too large
    let mut p = proxy_with(|c| c.limits.max_image_pixels = 1);
    let mut d = d0.clone();
    d[29] = 1;
    assert_eq!(code(&send(&mut p, now, &[d])), ErrorCode::Malformed);
    // too large beats overloaded
    let mut p = proxy_with(|c| {
        c.limits.max_image_pixels = 1;
        c.limits.max_requests_in_flight = 1;
    });
    send(
        &mut p,
        now,
        &text_chunks(&[b'a'; 3000], 2, 31, 1472, 0)[..1],
    );
    assert_eq!(code(&send(&mut p, now, &[d0])), ErrorCode::TooLarge);
}

#[test]
fn coverage_and_overlap_errors_once_all_fragments_arrived() {
    let now = Instant::now();
    let img = small_image(8, 4, PixelFormat::Rgb8);
    // Two fragments that both carry row 0: overlap.
    let d = image_rows(&img, 1, 40, 1472);
    assert_eq!(d.len(), 1);
    let mut a = d[0].clone();
    set_u32(&mut a, 20, 2);
    let mut b = a.clone();
    set_u32(&mut b, 16, 1);
    assert_eq!(
        code(&send(&mut proxy(), now, &[a.clone(), b])),
        ErrorCode::Malformed
    );
    // A single fragment of a one-row rectangle claiming count 1 leaves rows uncovered.
    let mut row = image_rows(&small_image(8, 1, PixelFormat::Rgb8), 1, 41, 1472)[0].clone();
    set_u16(&mut row, 26, 4); // image height 4, rectangle 1 row
    assert_eq!(code(&send(&mut proxy(), now, &[row])), ErrorCode::Malformed);
    // Text: overlapping chunks that disagree, and a gap.
    let mut t = text_chunks(&[b'x'; 3000], 2, 42, 1472, 64);
    let last = t.len() - 1;
    let n = t[last].len();
    assert!(n > 36);
    t[last][36] = b'y'; // first overlapped byte differs
    assert_eq!(code(&send(&mut proxy(), now, &t)), ErrorCode::Malformed);
    let mut t = text_chunks(&[b'x'; 3000], 2, 43, 1472, 0);
    t.remove(1);
    for (i, d) in t.iter_mut().enumerate() {
        set_u32(d, 16, i as u32);
        set_u32(d, 20, 2);
    }
    assert_eq!(code(&send(&mut proxy(), now, &t)), ErrorCode::Malformed);
}

#[test]
fn tiles_need_their_halo() {
    let now = Instant::now();
    let img = small_image(640, 480, PixelFormat::Rgb8);
    let g = tile_grid(
        640,
        480,
        3,
        OutputGeometry {
            width: 224,
            height: 224,
            antialias: true,
        },
        1472,
    )
    .unwrap();
    // Shrink the first tile's input rectangle by one column: no halo.
    let (input, out) = g[0];
    let short = tensorwire::wire::Rect::new(input.x, input.y, input.w - 1, input.h);
    let d = image_tiles(&img, 1, 50, &[(short, out)]);
    assert_eq!(
        code(&send(&mut proxy(), now, &d)),
        ErrorCode::InvalidContent
    );
    // An output rectangle outside the output image.
    let bad_out = tensorwire::wire::Rect::new(220, 0, 8, 1);
    let d = image_tiles(&img, 1, 51, &[(input, bad_out)]);
    assert_eq!(code(&send(&mut proxy(), now, &d)), ErrorCode::Malformed);
}

#[test]
fn one_answer_per_request_and_late_fragments_start_nothing() {
    let now = Instant::now();
    let mut p = proxy();
    let t = text_chunks("héllo wörld, 你好 🌍".as_bytes(), 2, 60, 1472, 0);
    let out = send(&mut p, now, &t);
    let (ct, _, _) = response_body(&out, 60);
    assert_eq!(ct, 2);
    // The same fragments again: ignored, no new request.
    assert!(send(&mut p, now + Duration::from_millis(100), &t).is_empty());
    let s = p.stats();
    assert_eq!(
        (s.requests_started, s.requests_completed, s.late_fragments),
        (1, 1, 1)
    );
    // An ERROR'd request is answered once too.
    let mut bad = text_chunks(b"abc", 2, 61, 1472, 0);
    bad[0][33] = 1; // reserved
    assert_eq!(send(&mut p, now, &bad).len(), 1);
    assert!(send(&mut p, now, &bad).is_empty());
    // An expired request ignores its late fragments.
    let long = text_chunks(&[b'a'; 3000], 2, 62, 1472, 0);
    send(&mut p, now, &long[..1]);
    let mut out = Out::new();
    p.on_timeout(now + Duration::from_millis(300), &mut out);
    assert_eq!(code(&out), ErrorCode::Incomplete);
    assert!(send(&mut p, now + Duration::from_millis(310), &long[1..]).is_empty());
    assert_eq!(p.stats().requests_in_flight, 0);
}

#[test]
fn garbage_never_panics_and_memory_stays_bounded() {
    let mut p = proxy_with(|c| c.limits.max_bytes_in_flight = 1 << 20);
    let mut rng = fastrand::Rng::with_seed(3);
    let now = Instant::now();
    let img = small_image(40, 30, PixelFormat::Rgba8);
    let seeds: Vec<Vec<u8>> = image_rows(&img, 1, 1, 1472)
        .into_iter()
        .chain(text_chunks(&[b'q'; 4000], 2, 2, 1472, 16))
        .chain(image_tiles(
            &img,
            1,
            3,
            &tile_grid(
                40,
                30,
                4,
                OutputGeometry {
                    width: 224,
                    height: 224,
                    antialias: false,
                },
                1472,
            )
            .unwrap(),
        ))
        .collect();
    let mut out = Out::new();
    for i in 0..20_000u64 {
        let mut d = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(0..4) {
            let at = rng.usize(..d.len());
            d[at] = rng.u8(..);
        }
        if rng.bool() {
            d.truncate(rng.usize(..=d.len()));
        }
        if d.len() >= 16 {
            d[8..16].copy_from_slice(&(i % 97).to_be_bytes());
        }
        let from: SocketAddr = format!("10.9.0.{}:{}", 1 + i % 5, 1000 + i % 7)
            .parse()
            .unwrap();
        p.handle(now + Duration::from_micros(i * 50), from, &d, &mut out);
        assert!(p.stats().bytes_in_flight <= 1 << 20);
    }
    p.on_timeout(now + Duration::from_secs(5), &mut out);
    assert_eq!(p.stats().requests_in_flight, 0);
}
