// TCP from its tracepoints' own arguments: state transitions (tcpstates), connection lifetimes
// (tcplife), retransmits (tcpretrans) and resets; and the bytes of each connection by the comm
// that owns it (tcplife's TX_KB/RX_KB), read from struct tcp_sock at the running kernel's offsets
// (BTF_READ, programs/include/bcc_btf.h): never through the kernel headers, which may describe
// another kernel. No address or port is kept, so labels stay bounded.

#define PROTO_TCP 6    // IPPROTO_TCP
#define EEXIST 17      // include/uapi/asm-generic/errno-base.h
#define FAMILY_INET6 10  // AF_INET6

// include/net/tcp_states.h
#define STATE_ESTABLISHED 1
#define STATE_SYN_SENT 2
#define STATE_SYN_RECV 3
#define STATE_CLOSE 7
#define STATE_FIN_WAIT1 4
#define STATE_FIN_WAIT2 5
#define STATE_LAST_ACK 9
#define STATE_LISTEN 10
#define STATE_CLOSING 11
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

// The comm that owns each socket, from its first state change in process context (below).
// LRU, and deleted at close: sockets that never close while attached (or close before a state
// change we see) cannot keep it full; when more sockets are open than it holds, the oldest lose
// their owner instead of new ones.
struct tcp_owner_value {
    char comm[16];  // TASK_COMM_LEN
    u32 active;     // it connected (SYN_SENT): its bytes_acked counts the SYN
};
BPF_TABLE("lru_hash", u64, struct tcp_owner_value, tcp_owner, 32768);

struct tcp_comm_key {
    char comm[16];  // empty: no state change of the connection ran in process context
};
// Payload bytes of closed connections, by comm. LRU, as every map keyed by comm: comms come
// and go, and a new one evicts the one counted longest ago (docs/operations.md).
BPF_TABLE("lru_percpu_hash", struct tcp_comm_key, u64, tcp_sent_bytes, 4096);
BPF_TABLE("lru_percpu_hash", struct tcp_comm_key, u64, tcp_received_bytes, 4096);

#define SOCK_DONE 1  // enum sock_flags: set by tcp_fin(), when the peer's FIN arrives

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

static __always_inline void add_sent(struct tcp_comm_key *key, u64 value)
{
    u64 zero = 0, *count = tcp_sent_bytes.lookup(key);
    if (!count &&
        exporter_key_added(tcp_sent_bytes.insert(key, &zero), EXPORTER_MAP(tcp_sent_bytes)))
        count = tcp_sent_bytes.lookup(key);
    exporter_add_percpu(count, value, EXPORTER_MAP(tcp_sent_bytes));
}

static __always_inline void add_received(struct tcp_comm_key *key, u64 value)
{
    u64 zero = 0, *count = tcp_received_bytes.lookup(key);
    if (!count && exporter_key_added(tcp_received_bytes.insert(key, &zero),
                                     EXPORTER_MAP(tcp_received_bytes)))
        count = tcp_received_bytes.lookup(key);
    exporter_add_percpu(count, value, EXPORTER_MAP(tcp_received_bytes));
}

// Bytes of a connection, added by its owner's comm when it closes.
//
// Its owner is the task of its first state change in process context: connect() for one it
// opened, close() or shutdown() for one it accepted. A state change runs in process context
// exactly when the socket is locked by a task (lock_sock: sk_lock.owned); in softirq (packets,
// timers) it is not, and current is any task the interrupt found, often the peer on loopback.
// A connection with no such change before it closes (an accepted one reset by its peer, or
// timed out) is counted under an empty comm.
//
// The payload: bytes_acked counts every sequence number the peer acknowledged, so the SYN of a
// connection we opened and our FIN once acknowledged (snd_una reached write_seq, which counts
// the FIN) come off; bytes_received counts the peer's FIN once it arrived (SOCK_DONE).
static __always_inline void tcp_count_bytes(const void *sk, int from, int to)
{
    u64 key = (u64)sk;
    struct tcp_owner_value *owner = tcp_owner.lookup(&key);
    struct tcp_owner_value me = {};
    if (!owner && BTF_READ(sk, struct sock, sk_lock.owned)) {
        bpf_get_current_comm(&me.comm, sizeof(me.comm));
        me.active = to == STATE_SYN_SENT;
        if (to != STATE_CLOSE && tcp_owner.update(&key, &me))
            EXPORTER_UPDATE_FAILED(tcp_owner);
        owner = &me;
    }
    if (to != STATE_CLOSE)
        return;
    struct tcp_comm_key comm = {};
    if (owner)
        __builtin_memcpy(comm.comm, owner->comm, sizeof(comm.comm));
    bool active = owner && owner->active;
    tcp_owner.delete(&key);

    u64 acked = BTF_READ(sk, struct tcp_sock, bytes_acked);
    u64 received = BTF_READ(sk, struct tcp_sock, bytes_received);
    if (active && acked)
        acked -= 1;  // our SYN
    bool fin_sent = from == STATE_FIN_WAIT1 || from == STATE_FIN_WAIT2 ||
                    from == STATE_LAST_ACK || from == STATE_CLOSING;
    if (fin_sent && acked &&
        BTF_READ(sk, struct tcp_sock, snd_una) == BTF_READ(sk, struct tcp_sock, write_seq))
        acked -= 1;  // our FIN
    if (received && (BTF_READ(sk, struct sock, __sk_common.skc_flags) & (1UL << SOCK_DONE)))
        received -= 1;  // their FIN
    if (acked)
        add_sent(&comm, acked);
    if (received)
        add_received(&comm, received);
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
    tcp_count_bytes(args->skaddr, from, to);

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
