// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// tensorwire's XDP program: steer TWP/1 datagrams (our UDP port, allowed
// sources) into the AF_XDP socket of the receiving queue; pass everything
// else untouched (ARP, ICMP, TCP, other UDP, IP fragments).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Set by the loader before load (read-only after). */
const volatile __u16 ingress_port = 7878; /* host order */
/* 1: only listed sources, of either family: a family with no entries is
 * closed, not open (an IPv4-only list must not let every IPv6 source in). */
const volatile __u8 allowlist = 0;

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u8);
} allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, __u8);
} allow_v6 SEC(".maps");

enum counter {
	STEERED = 0,       /* redirected into an AF_XDP socket */
	PASSED = 1,        /* not ours: to the kernel stack */
	DROPPED_ALLOWLIST = 2,
	MALFORMED = 3,     /* looked like IP/UDP but headers are cut short */
	NO_SOCKET = 4,     /* ours, but no socket on this queue: passed */
	COUNTERS = 5,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int count(__u32 c, int action)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1;
	return action;
}

SEC("xdp")
int steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	void *cur;
	__u16 proto;

	if ((void *)(eth + 1) > end)
		return count(PASSED, XDP_PASS);
	proto = eth->h_proto;
	cur = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = cur;
		if ((void *)(vlan + 1) > end)
			return count(MALFORMED, XDP_PASS);
		proto = vlan->encap_proto;
		cur = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > end)
			return count(MALFORMED, XDP_PASS);
		if (ip->protocol != IPPROTO_UDP)
			return count(PASSED, XDP_PASS);
		/* Fragments: the kernel reassembles them. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return count(PASSED, XDP_PASS);
		if (ip->ihl < 5)
			return count(MALFORMED, XDP_PASS);
		udp = cur + ip->ihl * 4;
		if ((void *)(udp + 1) > end)
			return count(MALFORMED, XDP_PASS);
		if (udp->dest != bpf_htons(ingress_port))
			return count(PASSED, XDP_PASS);
		if (allowlist) {
			struct lpm_v4 key = { .prefixlen = 32 };
			__builtin_memcpy(key.addr, &ip->saddr, 4);
			if (!bpf_map_lookup_elem(&allow_v4, &key))
				return count(DROPPED_ALLOWLIST, XDP_DROP);
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > end)
			return count(MALFORMED, XDP_PASS);
		/* Extension headers are not parsed: such packets go to the stack. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return count(PASSED, XDP_PASS);
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return count(MALFORMED, XDP_PASS);
		if (udp->dest != bpf_htons(ingress_port))
			return count(PASSED, XDP_PASS);
		if (allowlist) {
			struct lpm_v6 key = { .prefixlen = 128 };
			__builtin_memcpy(key.addr, &ip6->saddr, 16);
			if (!bpf_map_lookup_elem(&allow_v6, &key))
				return count(DROPPED_ALLOWLIST, XDP_DROP);
		}
	} else {
		return count(PASSED, XDP_PASS);
	}

	/* XDP_PASS when no socket is bound on this queue. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT)
		return count(STEERED, XDP_REDIRECT);
	return count(NO_SOCKET, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
