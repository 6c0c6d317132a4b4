//! End to end over loopback UDP: real photos and texts through the proxy
//! (socket ingress, echo upstream) with loss, duplication and reordering
//! injected by the client. Every answer must equal the transform computed
//! here, or be INCOMPLETE when fragments were dropped.

use std::time::Duration;
use tensorwire::client::{load_image, Client, Faults, OutputGeometry, Reply};
use tensorwire::config::Config;
use tensorwire::pipeline::{Pipelines, Plan};
use tensorwire::server::RunningProxy;
use tensorwire::transform::reference;
use tensorwire::wire::{ErrorCode, PixelFormat};

const IMAGES: &[&str] = &[
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "camera.png",
];
const TEXTS: &[&str] = &[
    "zen-of-python.txt",
    "apache-2.0.txt",
    "minilm-model-card.md",
];

mod support;
use support::testdata;

fn start() -> (RunningProxy, Pipelines) {
    let cfg = Config::builtin();
    let pipelines = cfg.build_pipelines().unwrap();
    (
        RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap(),
        pipelines,
    )
}

#[test]
fn images_rows_and_tiles_with_faults() {
    let (proxy, pipelines) = start();
    let Plan::Image(plan) = &pipelines.by_id(1).unwrap().plan else {
        panic!()
    };
    let mut c = Client::connect(proxy.addr).unwrap();
    let geometry = OutputGeometry {
        width: 224,
        height: 224,
        antialias: true,
    };
    let mut answered = 0;
    for (i, name) in IMAGES.iter().enumerate() {
        for format in [None, Some(PixelFormat::Bgr8), Some(PixelFormat::Rgba8)] {
            let img = load_image(&testdata(&format!("images/{name}")), format).unwrap();
            let want = plan.run_whole(&img.data, img.width, img.height, img.format);
            for tiles in [None, Some(geometry)] {
                let faults = Faults {
                    reorder: true,
                    dup: 0.1,
                    seed: i as u64 + 1,
                    ..Faults::default()
                };
                let reply = c.send_image(1, &img, tiles, 1472, &faults).unwrap();
                let t = reply
                    .tensors()
                    .unwrap_or_else(|e| panic!("{name} {format:?} tiles={}: {e}", tiles.is_some()));
                assert_eq!(t.len(), 1);
                assert_eq!(t[0].shape, vec![1, 3, 224, 224]);
                assert!(
                    t[0].data == want,
                    "{name} {format:?} tiles={}: tensor differs",
                    tiles.is_some()
                );
                answered += 1;
            }
        }
    }
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.requests_completed, answered);
    assert!(stats.duplicate_fragments > 0, "duplicates were injected");
    assert_eq!(stats.requests_in_flight, 0);
}

#[test]
fn pipeline_output_is_close_to_the_image_crate() {
    let cfg = Config::builtin();
    let pipelines = cfg.build_pipelines().unwrap();
    let Plan::Image(plan) = &pipelines.by_id(1).unwrap().plan else {
        panic!()
    };
    for name in IMAGES {
        let img = load_image(&testdata(&format!("images/{name}")), None).unwrap();
        let ours = tensorwire::transform::resize::resize_image(
            &plan.resize_plan(img.width, img.height),
            &img.data,
            img.format.channels(),
            &mut Vec::new(),
        );
        let theirs =
            reference::image_crate_resize(&img.data, img.width, img.height, img.format, 224, 224);
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let equal =
            ours.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / ours.len() as f64;
        println!(
            "{name}: {:.1}% equal to the image crate, max diff {max}",
            equal * 100.0
        );
        assert!(max <= 1, "{name}: max diff {max}");
    }
}

/// Sends testdata text `name` to `pipeline` with overlaps 0, 64 and 300,
/// reordered and 20% duplicated, and checks every answer against the
/// tokenizers crate on the whole text; returns (text bytes, tensors).
fn assert_text_over_overlaps(
    c: &mut Client,
    pipeline: u16,
    plan: &tensorwire::transform::text::TextPlan,
    name: &str,
) -> (Vec<u8>, Vec<tensorwire::transform::Tensor>) {
    let body = std::fs::read(testdata(&format!("text/{name}"))).unwrap();
    let want = reference::whole_text_tensors(plan, std::str::from_utf8(&body).unwrap()).unwrap();
    for overlap in [0, 64, 300] {
        let faults = Faults {
            reorder: true,
            dup: 0.2,
            seed: name.len() as u64 * 10 + overlap as u64,
            ..Faults::default()
        };
        let reply = c
            .send_text(pipeline, &body, overlap, 1472, &faults)
            .unwrap();
        assert_eq!(reply.tensors().unwrap(), want, "{name} overlap {overlap}");
    }
    (body, want)
}

#[test]
fn texts_with_overlaps_and_faults() {
    let (proxy, pipelines) = start();
    let Plan::Text(plan) = &pipelines.by_id(2).unwrap().plan else {
        panic!()
    };
    let mut c = Client::connect(proxy.addr).unwrap();
    for name in TEXTS {
        let (body, want) = assert_text_over_overlaps(&mut c, 2, plan, name);
        // Small datagrams: many chunks, cuts inside UTF-8 sequences.
        let reply = c
            .send_text(
                2,
                &body,
                7,
                100,
                &Faults {
                    reorder: true,
                    seed: 5,
                    ..Faults::default()
                },
            )
            .unwrap();
        assert_eq!(reply.tensors().unwrap(), want, "{name} small chunks");
    }
    let multilingual = "Zürich, 東京, Москва — naïve café 🎉 résumé";
    let want = reference::whole_text_tensors(plan, multilingual).unwrap();
    let reply = c
        .send_text(
            2,
            multilingual.as_bytes(),
            3,
            40,
            &Faults {
                reorder: true,
                seed: 9,
                ..Faults::default()
            },
        )
        .unwrap();
    assert_eq!(reply.tensors().unwrap(), want);
    let empty = c.send_text(2, b"", 0, 1472, &Faults::default()).unwrap();
    assert_eq!(empty.tensors().unwrap()[0].shape, vec![1, 2], "[CLS] [SEP]");
    drop(proxy);
}

#[test]
fn dropped_fragments_give_incomplete_and_late_duplicates_start_nothing() {
    let (proxy, _) = start();
    let mut c = Client::connect(proxy.addr).unwrap();
    let img = load_image(&testdata("images/chelsea.png"), None).unwrap();
    let id = c.next_request_id();
    let all = tensorwire::client::image_rows(&img, 1, id, 1472);
    let faults = Faults {
        drop: 0.3,
        reorder: true,
        seed: 11,
        ..Faults::default()
    };
    let sent = faults.apply(all.clone());
    assert!(sent.len() < all.len());
    c.send_raw(&sent).unwrap();
    match c.receive(id).unwrap() {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::Incomplete),
        other => panic!("expected INCOMPLETE, got {other:?}"),
    }
    // The missing fragments arrive late: no new request, no answer.
    c.send_raw(&all).unwrap();
    c.timeout = Duration::from_millis(600);
    assert!(
        c.receive(id).is_err(),
        "a late fragment must not start a new request"
    );
    let (stats, _) = proxy.stop().unwrap();
    assert_eq!(stats.requests_started, 1);
    assert_eq!(stats.late_fragments, all.len() as u64);
    assert_eq!(stats.errors(ErrorCode::Incomplete), 1);
}

#[test]
fn describe_over_the_wire_and_ipv6() {
    let cfg = Config::builtin();
    let proxy = RunningProxy::spawn(cfg, "[::1]:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(proxy.addr).unwrap();
    let d = c.describe().unwrap();
    assert_eq!(d["protocol"], 1);
    assert_eq!(d["pipelines"][1]["text"]["tokenizer"], "all-MiniLM-L6-v2");
    let img = load_image(&testdata("images/camera.png"), None).unwrap();
    let r = c
        .send_image(1, &img, None, 1452, &Faults::default())
        .unwrap();
    assert_eq!(r.tensors().unwrap()[0].shape, vec![1, 3, 224, 224]);
}

/// A byte-level BPE pipeline (cl100k_base, through the `tokenizers` crate
/// and the stitcher) over the wire: ids equal the crate on the whole text.
#[test]
fn byte_level_bpe_text_pipeline_over_the_wire() {
    let json = support::cl100k_json();
    let dir = std::env::temp_dir().join(format!("tw-e2e-cl100k-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let mut cfg = Config::builtin();
    let mut p = cfg.pipelines[1].clone();
    p.id = 3;
    p.name = "cl100k".into();
    let text_cfg = p.text.as_mut().unwrap();
    text_cfg.tokenizer = path.to_string_lossy().into_owned();
    text_cfg.tokenizer_name = Some("cl100k_base".into());
    text_cfg.max_length = 100_000;
    cfg.pipelines.push(p);
    let pipelines = cfg.build_pipelines().unwrap();
    let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let Plan::Text(plan) = &pipelines.by_id(3).unwrap().plan else {
        panic!()
    };
    assert_eq!(
        plan.cut_rule(),
        tensorwire::transform::stitch::CutRule::BeforeSpaceLetter
    );
    let mut c = Client::connect(proxy.addr).unwrap();
    for name in ["gpl-3.0.txt", "utf8-demo.txt", "fastrand-lib.rs"] {
        assert_text_over_overlaps(&mut c, 3, plan, name);
    }
    drop(proxy);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Replies leave in UDP GSO batches by default and one datagram per call
/// with `ingress.gso = false`: the client reassembles the same tensors,
/// also for two clients whose replies interleave in one receive batch.
#[test]
fn gso_and_plain_replies_carry_the_same_bytes() {
    let img = load_image(&testdata("images/chelsea.png"), None).unwrap();
    let mut answers = Vec::new();
    for gso in [false, true] {
        let mut cfg = Config::builtin();
        cfg.ingress.gso = gso;
        let proxy = RunningProxy::spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut a = Client::connect(proxy.addr).unwrap();
        let mut b = Client::connect(proxy.addr).unwrap();
        // Both requests' last datagrams arrive together: the proxy answers
        // both in one batch, to two destinations.
        let (ia, ib) = (a.next_request_id(), b.next_request_id());
        let ra = tensorwire::client::image_rows(&img, 1, ia, 1472);
        let rb = tensorwire::client::image_rows(&img, 1, ib, 1472);
        let (la, lb) = (ra.len(), rb.len());
        a.send_raw(&ra[..la - 1]).unwrap();
        b.send_raw(&rb[..lb - 1]).unwrap();
        a.send_raw(&ra[la - 1..]).unwrap();
        b.send_raw(&rb[lb - 1..]).unwrap();
        let ta = a.receive(ia).unwrap().tensors().unwrap();
        let tb = b.receive(ib).unwrap().tensors().unwrap();
        assert_eq!(ta, tb);
        let (stats, udp) = proxy.stop().unwrap();
        assert_eq!(stats.responses_sent, 2);
        assert_eq!(udp.gso_sends > 0, gso, "{udp:?}");
        answers.push(ta);
    }
    assert_eq!(answers[0], answers[1]);
}
