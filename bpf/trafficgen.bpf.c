// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// The benchmark's traffic generator: run with BPF_PROG_TEST_RUN and
// BPF_F_TEST_XDP_LIVE_FRAMES, each repetition sends the test frame out of
// the interface named in the context (XDP_TX). Several Mpps on one core,
// where socket and AF_XDP senders manage well under one; never attached.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int transmit_frame(struct xdp_md *ctx)
{
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
