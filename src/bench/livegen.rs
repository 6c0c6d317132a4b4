//! The benchmark's traffic generator: one frame transmitted over and over by
//! the kernel itself (BPF_PROG_TEST_RUN in live-frames mode running an XDP
//! program that returns XDP_TX, Linux >= 5.18). It reaches several Mpps on
//! one core, so the receivers, not the sender, set the measured rate.
//! Frames always arrive on the peer's RX queue 0.

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

mod skel {
    include!(concat!(env!("OUT_DIR"), "/trafficgen.skel.rs"));
}
use skel::{TrafficgenSkel, TrafficgenSkelBuilder};

/// Repetitions per syscall: short enough to look at the clock often.
const REPEAT_PER_CALL: i32 = 100_000;
/// Frames the kernel builds and sends per batch (its maximum is 256).
const BATCH: u32 = 64;

pub struct LiveFrameGenerator {
    skel: TrafficgenSkel<'static>,
}

impl LiveFrameGenerator {
    /// Loads the XDP_TX program (not attached anywhere).
    pub fn load() -> Result<LiveFrameGenerator> {
        // The skeleton borrows its object for its whole life: leaked once
        // per generator (one per benchmark run).
        let object: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let skel = TrafficgenSkelBuilder::default()
            .open(object)
            .context("opening the generator program")?
            .load()
            .context("loading the generator program")?;
        Ok(LiveFrameGenerator { skel })
    }

    /// Sends `frame` out of interface `ifindex` (in the calling thread's
    /// network namespace) for `dur`; returns the frames handed to the
    /// driver. The caller's thread does the work: pin it.
    pub fn transmit(&self, ifindex: u32, frame: &[u8], dur: Duration) -> Result<u64> {
        let fd = self.skel.progs.transmit_frame.as_fd().as_raw_fd();
        // struct xdp_md as live mode wants it: data 0, data_end = length,
        // no metadata, a real ingress interface and queue.
        let mut ctx: libbpf_rs::libbpf_sys::xdp_md = unsafe { std::mem::zeroed() };
        ctx.data_end = frame.len() as u32;
        ctx.ingress_ifindex = ifindex;
        ctx.rx_queue_index = 0;
        let (mut sent, end) = (0u64, Instant::now() + dur);
        while Instant::now() < end {
            let mut opts = libbpf_rs::libbpf_sys::bpf_test_run_opts {
                sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_test_run_opts>() as _,
                data_in: frame.as_ptr().cast(),
                data_size_in: frame.len() as u32,
                ctx_in: (&ctx as *const libbpf_rs::libbpf_sys::xdp_md).cast(),
                ctx_size_in: std::mem::size_of::<libbpf_rs::libbpf_sys::xdp_md>() as u32,
                repeat: REPEAT_PER_CALL,
                flags: libbpf_rs::libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES,
                batch_size: BATCH,
                // SAFETY: every other field is a plain integer or a null
                // pointer (no output buffers: live mode forbids them).
                ..unsafe { std::mem::zeroed() }
            };
            // SAFETY: fd is our loaded program; the pointers in `opts`
            // point at `frame` and `ctx`, which outlive the call.
            let r = unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(fd, &mut opts) };
            if r != 0 {
                let e = std::io::Error::from_raw_os_error(-r);
                if sent == 0 {
                    bail!("BPF_PROG_TEST_RUN (live frames) failed: {e}");
                }
                break;
            }
            sent += REPEAT_PER_CALL as u64;
        }
        Ok(sent)
    }
}
