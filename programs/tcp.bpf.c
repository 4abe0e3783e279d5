// TCP from its tracepoints' own arguments: state transitions (tcpstates), connection lifetimes
// (tcplife), retransmits (tcpretrans) and resets. The socket address (skaddr) is used only as an
// opaque key, never dereferenced; no address or port is kept, so labels stay bounded.

#define PROTO_TCP 6    // IPPROTO_TCP
#define EEXIST 17      // include/uapi/asm-generic/errno-base.h
#define FAMILY_INET6 10  // AF_INET6

// include/net/tcp_states.h
#define STATE_ESTABLISHED 1
#define STATE_SYN_SENT 2
#define STATE_SYN_RECV 3
#define STATE_CLOSE 7
#define STATE_LISTEN 10
#define STATES 16  // 1..13 today; room for a few more

// Linux 6.10+ gives tcp_send_reset an `enum sk_rst_reason` field. BCC declares the record
// from the tracefs format, so the enum must be complete even though the field is not used;
// older headers (and older kernels) have no such enum.
enum sk_rst_reason { BCC_EXPORTER_SK_RST_REASON_UNUSED };

struct transition_key {
    u16 family;  // AF_INET 2, AF_INET6 10
    u8 from;
    u8 to;
};

struct lifetime_key {
    u16 family;
    u16 pad;
    u32 slot;
};

// At most 2 families x 16 x 16 keys: it cannot fill, and keys never come and go.
BPF_PERCPU_HASH(tcp_transitions, struct transition_key, u64, 512);
BPF_PERCPU_HASH(tcp_lifetime, struct lifetime_key, u64, 128);
// When each connection started, by socket address. LRU: when more connections are open than
// it holds, the oldest lose their start (and are not counted) instead of new ones.
BPF_TABLE("lru_hash", u64, u64, birth, 32768);
// Index state | ipv6 << 8: the key bytes are (state, family).
BPF_PERCPU_ARRAY(tcp_retransmits, u64, 512);
// Index: the state of the socket that sent it, 0 when none (no socket, or not a full one).
BPF_PERCPU_ARRAY(tcp_resets_sent, u64, STATES);
// Index: 0 IPv4, 1 IPv6.
BPF_PERCPU_ARRAY(tcp_resets_received, u64, 2);

// Adds to a count; false when there is none: a hash map that is full.
static __always_inline bool add(u64 *count, u64 value)
{
    if (!count)
        return false;
    *count += value;  // per-CPU: no other CPU writes this value
    return true;
}

// The counter idiom of programs/include/bcc_exporter.h, for each hash.
static __always_inline void add_transition(struct transition_key *key)
{
    u64 zero = 0, *count = tcp_transitions.lookup(key);
    if (!count &&
        exporter_key_added(tcp_transitions.insert(key, &zero), EXPORTER_MAP(tcp_transitions)))
        count = tcp_transitions.lookup(key);
    exporter_add_percpu(count, 1, EXPORTER_MAP(tcp_transitions));
}

static __always_inline void add_lifetime(struct lifetime_key *key, u64 value)
{
    u64 zero = 0, *slot = tcp_lifetime.lookup(key);
    if (!slot && exporter_key_added(tcp_lifetime.insert(key, &zero), EXPORTER_MAP(tcp_lifetime)))
        slot = tcp_lifetime.lookup(key);
    exporter_add_percpu(slot, value, EXPORTER_MAP(tcp_lifetime));
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != PROTO_TCP)
        return 0;
    int from = args->oldstate, to = args->newstate;
    if (from < 0 || from >= STATES || to < 0 || to >= STATES)
        return 0;
    struct transition_key transition = {.family = args->family, .from = from, .to = to};
    add_transition(&transition);

    u64 sk = (u64)args->skaddr;
    u64 now = bpf_ktime_get_ns();
    if (to == STATE_SYN_SENT || to == STATE_SYN_RECV) {
        // A connection starts (connect, or a SYN to a listener).
        if (birth.update(&sk, &now))
            EXPORTER_UPDATE_FAILED(birth);
    } else if (to == STATE_ESTABLISHED) {
        // Its start was missed: count from here. One already known is kept: no failure.
        long err = birth.insert(&sk, &now);
        if (err && err != -EEXIST)
            EXPORTER_UPDATE_FAILED(birth);
    } else if (to == STATE_LISTEN) {
        birth.delete(&sk);  // a listener is not a connection
    } else if (to == STATE_CLOSE) {
        u64 *start = birth.lookup(&sk);
        if (!start)
            return 0;  // never connected (a listener), or started before we attached
        u64 usecs = (now - *start) / 1000;
        birth.delete(&sk);
        struct lifetime_key key = {.family = args->family};
        EXPORTER_OBSERVE(add_lifetime, &key, key.slot, bpf_log2l(usecs), EXPORTER_SUM_SLOT, usecs);
    }
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    int state = args->state;
    if (state < 0 || state >= STATES)
        return 0;
    u32 index = state | (args->family == FAMILY_INET6) << 8;
    add(tcp_retransmits.lookup(&index), 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    int state = args->state;
    u32 index = state >= 0 && state < STATES ? state : 0;
    add(tcp_resets_sent.lookup(&index), 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    u32 index = args->family == FAMILY_INET6;
    add(tcp_resets_received.lookup(&index), 1);
    return 0;
}
