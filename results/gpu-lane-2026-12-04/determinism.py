import sys, json, torch
sys.path.insert(0, "tests")
from test_gpu import smallest_tasks
from testtime.model.loading import load_model
from testtime.stages.engine import greedy_generate
from testtime.stages.predict import PredictConfig, make_queries
m = load_model(device="cuda"); model, codec = m.model, m.codec
qs, _ = make_queries(smallest_tasks(12), codec, PredictConfig(views=4))
P, N = [q.prompt for q in qs], [q.max_new for q in qs]
runs = {k: greedy_generate(model, P, N, codec, cuda_graphs=g) for k, g in [("g1", True), ("g2", True), ("e1", False), ("e2", False)]}
def d(a, b): return [abs(x.logprob - y.logprob) for x, y in zip(runs[a], runs[b])]
out = {}
for a, b in [("g1", "g2"), ("e1", "e2"), ("g1", "e1")]:
    x = d(a, b); out[f"{a}-{b}"] = {"max": max(x), "nonzero": sum(v > 0 for v in x), "n": len(x)}
x = d("g1", "e1"); i = max(range(len(x)), key=x.__getitem__)
out["worst"] = {"logprob": runs["e1"][i].logprob, "tokens": len(runs["e1"][i].tokens), "prompt_len": len(P[i])}
print(json.dumps(out))
