#!/usr/bin/env bash
# One measured run: inference-sim over HTTP, the gateway pointed at it, loadgen
# against the gateway. Prints one line: replies/s, busy share, client TTFT,
# upstream calls and sequences per call (from /metrics), the gateway's CPU
# seconds, the simulator's own TTFT (GET /admin/stats) and the overhead histogram.
# usage: run.sh LABEL "SIM FLAGS" "GATEWAY [inference] TOML LINES" "LOADGEN ARGS"
set -euo pipefail
LABEL=$1; SIMF=$2; INF=$3; LG=$4
B=${BIN:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release}
d=$(mktemp -d)
$B/inference-sim --listen 127.0.0.1:0 $SIMF > $d/sim.out 2>$d/sim.err &
sp=$!
for i in $(seq 200); do grep -q LISTENING $d/sim.out && break; sleep 0.05; done
saddr=$(grep LISTENING $d/sim.out | awk '{print $2}')
cfg=$d/g.toml
printf '[limits]\nmessage_rate = { per_sec = 10000.0, burst = 10000.0 }\nframe_rate = { per_sec = 10000.0, burst = 10000.0 }\n[inference]\nendpoints = ["http://%s"]\n%b\n' "$saddr" "$INF" > $cfg
$B/gateway --listen 127.0.0.1:0 --data-dir $d/data --config $cfg --log warn > $d/out 2>$d/err &
gp=$!
for i in $(seq 200); do grep -q LISTENING $d/out && break; sleep 0.05; done
addr=$(awk '/^LISTENING/{print $2}' $d/out)
$B/loadgen --url "ws://$addr/ws?site=demo" $LG --quiet --json $d/r.json > $d/lg.out 2>&1 || true
cpu=$(awk '{print ($14+$15)/100}' /proc/$gp/stat)
curl -s http://$addr/metrics > $d/metrics
curl -s http://$saddr/admin/stats > $d/sim.json
kill $gp $sp; wait $gp $sp 2>/dev/null || true
python3 - "$LABEL" "$d" "$cpu" <<'PY'
import json,sys,re
label,d,cpu=sys.argv[1],sys.argv[2],float(sys.argv[3])
r=json.load(open(d+'/r.json')); m=r['metrics']; msg=r['messages']
sim=json.load(open(d+'/sim.json'))
met=open(d+'/metrics').read()
def c(name):
    v=re.findall(r'^'+name+r'(?:\{[^}]*\})? ([0-9.e+]+)$',met,re.M)
    return sum(float(x) for x in v)
def hq(name,q):
    # quantile from a prometheus histogram (upper bound of the bucket)
    b=[(float('inf') if le=='+Inf' else float(le),float(n)) for le,n in re.findall(r'^'+name+r'_bucket\{[^}]*le="([^"]+)"\} ([0-9.e+]+)$',met,re.M)]
    agg={}
    for le,n in b: agg[le]=agg.get(le,0)+n
    b=sorted(agg.items()); tot=b[-1][1] if b else 0
    for le,n in b:
        if tot and n>=q*tot: return le
    return float('nan')
t=m['ttft']; el=r['measured_s']
calls=c('lc_inference_upstream_calls_total'); seqs=c('lc_inference_upstream_sequences_total')
print(f"{label:28s} sent={msg['sent']} replied/s={msg['replied']/el:7.1f} busy={msg['busy']} ({100*msg['busy']/max(msg['sent'],1):.1f}%) errors={msg['errors']} "
      f"ttft p50={t['p50_us']/1000 if t['p50_us'] else 0:.1f}ms p99={t['p99_us']/1000 if t['p99_us'] else 0:.1f}ms "
      f"tok/s={c('lc_inference_tokens_total')/el:7.0f} calls={calls:.0f} seq/call={seqs/max(calls,1):.1f} gwcpu={cpu:.1f}s "
      f"sim_ttft p50={sim['ttft']['p50_us']/1000:.2f}ms p99={sim['ttft']['p99_us']/1000:.2f}ms overhead p50<={hq('lc_inference_overhead_seconds',0.5)*1e3:.3f}ms p99<={hq('lc_inference_overhead_seconds',0.99)*1e3:.3f}ms")
PY
cp $d/r.json "/tmp/last-${LABEL// /_}.json" 2>/dev/null || true
rm -rf $d
