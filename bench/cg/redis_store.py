"""Redis instructions per stored event (callgrind), for each way of storing an inbound event: see bench/README.md.

Usage: python3 bench/cg/redis_store.py <cur|lean|batchN|multi|pipe|meta|xadd|ceil> <events> <free port>
"""
import glob, os, re, shutil, socket, subprocess, sys, tempfile, time
def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str): a = a.encode()
        if isinstance(a, int): a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
body = (b'{"id":"evt_X","object":"event","data":{"object":' + b'{"k":"' + b'v'*1500 + b'"}}}')
headers = b'{"stripe-signature":"t=1,v1=' + b'a'*64 + b'","user-agent":"Stripe/1.0","content-type":"application/json","x-request-id":"' + b'0'*36 + b'"}'
# The shipped store script (still used on Redis Cluster and for published events), read from the source so
# this measures what hookgate runs.
_src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../gateway/stream.rs")).read()
CUR = re.search(r'const STORE_SCRIPT: &str = r#"(.*?)"#;', _src, re.S).group(1)
LEAN = r"""
local prev = redis.call('GET', KEYS[1])
if prev then
  local sep = string.find(prev, '|', 1, true)
  if sep and string.sub(prev, sep + 1) == ARGV[2] then return {0, string.sub(prev, 1, sep - 1)} end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
if not prev then redis.call('SET', KEYS[1], id .. '|' .. ARGV[2], 'PX', ARGV[1]) end
return {1, id}
"""
# KEYS: stream, dedup1..N. ARGV: ttl, nf, names[nf], then per event: binding, values[nf]
BATCH = r"""
local nf = tonumber(ARGV[2])
local names = {}
for i = 1, nf do names[i] = ARGV[2 + i] end
local out = {}
local a = 3 + nf
local args = {}
for e = 2, #KEYS do
  local b = ARGV[a]
  local prev = redis.call('GET', KEYS[e])
  local dup = nil
  if prev then
    local sep = string.find(prev, '|', 1, true)
    if sep and string.sub(prev, sep + 1) == b then dup = string.sub(prev, 1, sep - 1) end
  end
  if dup then out[#out + 1] = {0, dup} else
    for i = 1, nf do args[2 * i - 1] = names[i]; args[2 * i] = ARGV[a + i] end
    local id = redis.call('XADD', KEYS[1], '*', unpack(args, 1, 2 * nf))
    if not prev then redis.call('SET', KEYS[e], id .. '|' .. b, 'PX', ARGV[1]) end
    out[#out + 1] = {1, id}
  end
  a = a + 1 + nf
end
return out
"""
names = ["source","received_at","content_type","client_ip","request_id","event_id","headers","body"]
ctr = [0]
def vals():
    ctr[0] += 1
    i = ctr[0]
    return ["stripe", str(1700000000000+i), "application/json", "127.0.0.1", "%036d" % i, "evt_%d" % i, headers, body.replace(b"evt_X", b"evt_%d" % i)]
def fields(v):
    r = []
    for n, x in zip(names, v): r += [n, x]
    return r
def gen(variant, n, sha):
    out = []
    if variant.startswith("batch"):
        k = int(variant[5:])
        for _ in range(n // k):
            evs = [vals() for _ in range(k)]
            keys = ["hg:inbound"] + ["hg:dedup:stripe:%s" % v[5] for v in evs]
            argv = ["259200000", str(len(names))] + names
            for v in evs: argv += [""] + v
            out.append(enc("EVALSHA", sha, len(keys), *keys, *argv))
        return out
    for _ in range(n):
        v = vals(); dk = "hg:dedup:stripe:%s" % v[5]
        if variant in ("cur", "lean"):
            out.append(enc("EVALSHA", sha, 2, dk, "hg:inbound", "259200000", "", *fields(v)))
        elif variant == "multi":
            out += [enc("MULTI"), enc("SET", dk, "tok%d|" % ctr[0], "NX", "GET", "PX", "259200000"), enc("XADD", "hg:inbound", "*", *fields(v)), enc("EXEC")]
        elif variant == "pipe":
            out += [enc("SET", dk, "tok%d|" % ctr[0], "NX", "GET", "PX", "259200000"), enc("XADD", "hg:inbound", "*", *fields(v))]
        elif variant == "meta":
            # The store since 2026-12-06 (later): source, the rest of the receipt as one JSON `meta`, body.
            meta = ('{"received_at":%s,"content_type":"application/json","client_ip":"127.0.0.1","request_id":"%s","event_id":"%s","dedup":"tok%d|","headers":' % (v[1], v[4], v[5], ctr[0])).encode() + headers + b"}"
            out += [enc("XADD", "hg:inbound", "*", "source", "stripe", "meta", meta, "body", v[7]), enc("SET", dk, "tok%d|" % ctr[0], "NX", "GET", "PX", "259200000")]
        elif variant == "xadd":
            out.append(enc("XADD", "hg:inbound", "*", *fields(v)))
        elif variant == "ceil":
            out.append(enc("XADD", "hg:inbound", "*", "source", "stripe", "received_at", v[1], "body", v[7]))
    return out
def send(s, cmds, window=64):
    # pipelined, with a bounded window; count replies by reading until expected number of top-level replies
    buf = b""
    f = s.makefile("rb")
    i = 0
    pending = 0
    def read_reply():
        line = f.readline()
        t = line[:1]
        if t in b"+-:": return
        if t == b"$":
            n = int(line[1:-2])
            if n >= 0: f.read(n + 2)
            return
        if t == b"*":
            n = int(line[1:-2])
            for _ in range(max(n, 0)): read_reply()
            return
        raise Exception(line)
    while i < len(cmds) or pending:
        while i < len(cmds) and pending < window:
            s.sendall(cmds[i]); i += 1; pending += 1
        read_reply(); pending -= 1
variant = sys.argv[1]; n = int(sys.argv[2]); port = int(sys.argv[3])
d = tempfile.mkdtemp(prefix="redis-store-" + variant + "-")
p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/cg.%%p" % d, "redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(300):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError: time.sleep(0.1)
sha = ""
if variant in ("cur", "lean") or variant.startswith("batch"):
    src = {"cur": CUR, "lean": LEAN}.get(variant, BATCH)
    s.sendall(enc("SCRIPT", "LOAD", src)); r = s.recv(1000); sha = r.split(b"\r\n")[1].decode()
send(s, gen(variant, 512, sha))
subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True)
t0 = time.time()
send(s, gen(variant, n, sha))
subprocess.run(["callgrind_control", "-d", "m", str(p.pid)], capture_output=True)
s.sendall(enc("XLEN", "hg:inbound")); print("xlen", s.recv(100).strip())
s.sendall(enc("SHUTDOWN", "NOSAVE"))
p.wait()
# Dump 1 is the one taken after the warm-up was zeroed: the measured events only.
dump = [fn for fn in glob.glob(d + "/cg.*") if fn.endswith(".1")]
tot = int(re.search(r"^(?:summary|totals): (\d+)", open(dump[0], errors="replace").read(), re.M).group(1))
shutil.rmtree(d)
print(variant, "instr/event", round(tot / n))
