"""The C every translated program starts with: bpftrace's bucket functions and avg()'s sums."""

# hist(): bpftrace's buckets are negatives, 0, 1, then
# [2^k, 2^(k+1)); the map key is the bucket's (exclusive) upper bound, the `le` it is exported
# as: 0, 1, 2, 4, ... (metrics.py). bpftrace 0.17's log2 shifts by 16, 8, 4, 2, 1 at most, so
# every value from 2^31 up lands in the bucket it prints as [2G, 4G): here it is +Inf only.
# lhist(): the key is the upper bound of bpftrace's bucket, `min` for below-min, past the last
# bound for its last bucket.
HELPERS = """\
static __always_inline u64 bt_hist(s64 n)
{
    if (n < 0)
        return 0;
    if (n == 0)
        return 1;
    u64 v = n;
    if (v >> 31)
        return 1ULL << 32;  // past the last bound: +Inf only
    int bits = 0;
    if (v >> 16) { v >>= 16; bits += 16; }
    if (v >> 8) { v >>= 8; bits += 8; }
    if (v >> 4) { v >>= 4; bits += 4; }
    if (v >> 2) { v >>= 2; bits += 2; }
    if (v >> 1) { bits += 1; }
    return 2ULL << bits;
}

static __always_inline u64 bt_lhist(s64 v, s64 min, s64 max, s64 step)
{
    if (v < min)
        return min;
    if (v > max)
        return min + ((u64)(max - min) / step + 1) * step;
    return min + ((u64)(v - min) / step + 1) * step;
}

// avg(): the sum and count behind a mean.
struct bt_avg {
    s64 sum;
    u64 count;
};

// sum / count in 64-bit signed arithmetic, truncated toward zero (BPF divides unsigned).
static __always_inline u64 bt_mean(s64 sum, u64 count)
{
    if (count == 0)
        return 0;
    if (sum < 0)
        return -(s64)((u64)-sum / count);
    return (u64)sum / count;
}
"""
