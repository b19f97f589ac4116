#!/usr/bin/env python3
"""Writes RESP commands for `redis-cli --pipe` that build a benchmark dataset (used by bench-decode.sh).

    python3 scripts/bench_gen.py mixed --keys 1000000 | redis-cli -p PORT --pipe
    python3 scripts/bench_gen.py big | redis-cli -p PORT --pipe
    python3 scripts/bench_gen.py bigstr | redis-cli -p PORT --pipe
    python3 scripts/bench_gen.py str512 | redis-cli -p PORT --pipe

`mixed` makes exactly --keys keys of mixed types, deterministically (fixed seed), in db 0 and db 1:

    share  type    encodings on Redis 6.2 (RDB 9)
    ~80%   string  raw/embstr (5-100 bytes); integers (25% of strings: 18% in the RDB's int8/16/32
                   encodings, 7% wider, written as text); 2% LZF-compressible values of
                   200-1000 bytes; 0.5% binary (non-UTF-8) keys
    ~7%    hash    ziplist (2-20 small fields); 1 in 200 has 200-2000 (a hashtable above 512)
    ~5%    list    quicklist of ziplists, 2-40 elements; 1 in 500 holds 2000-20000 elements
    ~4%    set     intset (half), hashtable of strings (half); 1 in 200 holds 1000-5000 members
    ~4%    zset    ziplist (2-30 members); 1 in 100 is a skiplist of 200-2000 members
    <=16   stream  2000 entries each, 2 consumer groups with pending entries (1 per 50,000 keys)

A quarter of the keys carry a TTL of 1-30 days (never expiring during the run). Keys are spread
over db 0 (95%) and db 1 (5%).

`big` makes a few huge collections, to show that memory stays bounded whatever the size of one
key: a list of 2,000,000 elements, a hash of 1,000,000 fields, a set of 1,000,000 members and a
zset of 1,000,000 members (all in their large encodings: quicklist, hashtable, skiplist).

`bigstr` makes two 64 MiB strings (built with APPEND): one of random bytes (incompressible, not
UTF-8) and one of words (Redis stores it LZF-compressed), plus one small string.

`str512` makes one string of 512 MiB, the Redis maximum (built with APPEND): 256 MiB of random
bytes then 256 MiB of words, so the RDB stores it LZF-compressed and it is not UTF-8.
"""
import argparse
import random
import sys

SEED = 20240601
DAY_MS = 86_400_000


class Out:
    """Buffered RESP command writer."""

    def __init__(self, stream):
        self.stream = stream
        self.parts = []
        self.size = 0
        self.count = 0

    def cmd(self, *args):
        p = self.parts
        p.append(b"*%d\r\n" % len(args))
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            p.append(b"$%d\r\n%s\r\n" % (len(a), a))
            self.size += len(a)
        self.count += 1
        if self.size > 1 << 20:
            self.flush()

    def flush(self):
        self.stream.write(b"".join(self.parts))
        self.parts.clear()
        self.size = 0


WORDS = (b"alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         b"oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
PREFIXES = [b"user:", b"session:", b"cache:page:", b"cart:", b"ctr:", b"feed:", b"lock:", b"cfg:"]


ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789 _-:"
TO_ALPHABET = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))


def rand_text(rng, lo, hi):
    # printable, weakly compressible (like real values)
    return rng.randbytes(rng.randint(lo, hi)).translate(TO_ALPHABET)


def rand_words(rng, n):
    return b" ".join(rng.choice(WORDS) for _ in range(n))


def mixed(out, nkeys, rng):
    n_streams = min(16, max(1, nkeys // 50_000))
    n_hash = nkeys * 7 // 100
    n_list = nkeys * 5 // 100
    n_set = nkeys * 4 // 100
    n_zset = nkeys * 4 // 100
    n_string = nkeys - n_streams - n_hash - n_list - n_set - n_zset
    kinds = ([0] * n_string + [1] * n_hash + [2] * n_list + [3] * n_set + [4] * n_zset
             + [5] * n_streams)
    rng.shuffle(kinds)
    db1_from = nkeys * 95 // 100  # the last 5% go to db 1
    out.cmd(b"SELECT", b"0")
    for i, kind in enumerate(kinds):
        if i == db1_from:
            out.cmd(b"SELECT", b"1")
        key = b"%s%d" % (PREFIXES[i % len(PREFIXES)], i)
        ttl = rng.randint(DAY_MS, 30 * DAY_MS) if rng.random() < 0.25 else None
        if kind == 0:  # string
            r = rng.random()
            if r < 0.08:  # RDB int8/int16 encodings
                val = b"%d" % rng.randint(-32768, 32767)
            elif r < 0.18:  # RDB int32 encoding
                val = b"%d" % rng.randint(-(2**31), 2**31 - 1)
            elif r < 0.25:  # integers above 32 bits: an int in memory, text in the RDB
                val = b"%d" % rng.randint(-(10**12), 10**12)
            elif r < 0.27:
                val = rand_words(rng, rng.randint(40, 160))  # LZF-compressible
            else:
                val = rand_text(rng, 5, 100)
            if rng.random() < 0.005:
                key = b"bin:\xff\xfe" + key  # not UTF-8: base64 in JSON
            if ttl is None:
                out.cmd(b"SET", key, val)
            else:
                out.cmd(b"SET", key, val, b"PX", ttl)
            continue
        if kind == 1:  # hash
            if rng.random() < 0.005:
                nf = rng.randint(200, 2000)
            else:
                nf = rng.randint(2, 20)
            for start in range(0, nf, 1000):
                args = [b"HSET", key]
                for f in range(start, min(nf, start + 1000)):
                    args.append(b"field%d" % f)
                    args.append(rand_text(rng, 1, 30) if f % 3 else b"%d" % rng.randint(0, 10**6))
                out.cmd(*args)
        elif kind == 2:  # list
            if rng.random() < 0.002:
                ne = rng.randint(2000, 20000)
            else:
                ne = rng.randint(2, 40)
            for start in range(0, ne, 1000):
                args = [b"RPUSH", key]
                for e in range(start, min(ne, start + 1000)):
                    args.append(rand_text(rng, 1, 40) if e % 4 else b"%d" % rng.randint(0, 10**9))
                out.cmd(*args)
        elif kind == 3:  # set
            big = rng.random() < 0.005
            ne = rng.randint(1000, 5000) if big else rng.randint(2, 50)
            ints = rng.random() < 0.5
            for start in range(0, ne, 1000):
                args = [b"SADD", key]
                for e in range(start, min(ne, start + 1000)):
                    args.append(b"%d" % (e * 7 + rng.randint(0, 6)) if ints else b"m:%d:%s" % (e, rand_text(rng, 1, 12)))
                out.cmd(*args)
        elif kind == 4:  # zset
            ne = rng.randint(200, 2000) if rng.random() < 0.01 else rng.randint(2, 30)
            for start in range(0, ne, 1000):
                args = [b"ZADD", key]
                for e in range(start, min(ne, start + 1000)):
                    score = repr(rng.uniform(-1e6, 1e6)).encode() if e % 2 else b"%d" % rng.randint(0, 10**6)
                    args.append(score)
                    args.append(b"member:%d" % e)
                out.cmd(*args)
        else:  # stream
            for e in range(2000):
                out.cmd(b"XADD", key, b"*", b"sensor", b"%d" % (e % 17), b"temp",
                        repr(rng.uniform(-20, 40)).encode(), b"note", rand_words(rng, 3))
            for g in (b"g1", b"g2"):
                out.cmd(b"XGROUP", b"CREATE", key, g, b"0")
                out.cmd(b"XREADGROUP", b"GROUP", g, b"consumer-a", b"COUNT", b"50", b"STREAMS", key, b">")
                out.cmd(b"XREADGROUP", b"GROUP", g, b"consumer-b", b"COUNT", b"30", b"STREAMS", key, b">")
        if ttl is not None:
            out.cmd(b"PEXPIRE", key, ttl)


def big(out, rng):
    out.cmd(b"SELECT", b"0")
    batch = 1000
    for start in range(0, 2_000_000, batch):
        out.cmd(b"RPUSH", b"big:list", *[b"element-%d" % e for e in range(start, start + batch)])
    for start in range(0, 1_000_000, batch):
        args = [b"HSET", b"big:hash"]
        for f in range(start, start + batch):
            args += [b"field-%d" % f, b"value-%d" % (f * 31)]
        out.cmd(*args)
    for start in range(0, 1_000_000, batch):
        out.cmd(b"SADD", b"big:set", *[b"member-%d" % e for e in range(start, start + batch)])
    for start in range(0, 1_000_000, batch):
        args = [b"ZADD", b"big:zset"]
        for e in range(start, start + batch):
            args += [repr(e * 0.5).encode(), b"member-%d" % e]
        out.cmd(*args)


def bigstr(out, rng):
    out.cmd(b"SELECT", b"0")
    chunk = 1 << 20
    for _ in range(64):  # 64 MiB, incompressible, not UTF-8
        out.cmd(b"APPEND", b"big:string:random", rng.randbytes(chunk))
    words = rand_words(rng, 300_000)
    text = (words * (chunk // len(words) + 1))[:chunk]
    for i in range(64):  # 64 MiB of text: LZF-compressed in the RDB
        out.cmd(b"APPEND", b"big:string:text", b"%08d" % i + text[8:])
    out.cmd(b"SET", b"small:string", b"hello")


def str512(out, rng):
    out.cmd(b"SELECT", b"0")
    chunk = 1 << 20
    for _ in range(256):
        out.cmd(b"APPEND", b"big:string:512", rng.randbytes(chunk))
    words = rand_words(rng, 300_000)
    text = (words * (chunk // len(words) + 1))[:chunk]
    for i in range(256):
        out.cmd(b"APPEND", b"big:string:512", b"%08d" % i + text[8:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["mixed", "big", "bigstr", "str512"])
    ap.add_argument("--keys", type=int, default=1_000_000)
    a = ap.parse_args()
    rng = random.Random(SEED)
    out = Out(sys.stdout.buffer)
    if a.kind == "mixed":
        mixed(out, a.keys, rng)
    elif a.kind == "big":
        big(out, rng)
    elif a.kind == "bigstr":
        bigstr(out, rng)
    else:
        str512(out, rng)
    out.flush()
    sys.stdout.buffer.flush()
    print(f"bench_gen: {out.count} commands", file=sys.stderr)


if __name__ == "__main__":
    main()
