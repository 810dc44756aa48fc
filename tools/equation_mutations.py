"""Mutation check of the equation tests: applies each wrong version of an equation that a
reviewer found passing the old tests, runs tests/test_equations.py and tests/test_model.py, and
prints which tests catch it (every line must name at least one). Run from the repository root:
``.venv/bin/python tools/equation_mutations.py``."""
import re
import subprocess

M = [
 ("focal p_t^gamma*CE", "model_core/losses.py", "loss = (1 - pt).pow(self.gamma) * ce", "loss = pt.pow(self.gamma) * ce"),
 ("focal (1-p_t)^(gamma/2)*CE", "model_core/losses.py", "loss = (1 - pt).pow(self.gamma) * ce", "loss = (1 - pt).pow(self.gamma / 2) * ce"),
 ("Eq.1 softmax over queries", "model_core/models/lcc.py", "out = F.scaled_dot_product_attention(q, k, v, scale=scale)",
  "out = torch.softmax((q @ k.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5), dim=-2) @ v"),
 ("Eq.1 mean of values", "model_core/models/lcc.py", "out = F.scaled_dot_product_attention(q, k, v, scale=scale)",
  "out = v.mean(dim=2, keepdim=True).expand(b, nh, h * w, v.shape[-1])"),
 ("MCF weighted = average", "model_core/models/mcf.py", "return self.logits.softmax(0).to(ref.dtype).view(1, self.n, 1, 1, 1)",
  "return ref.new_full((1, self.n, 1, 1, 1), 1.0 / self.n)"),
 ("LCF ignores the patch box", "model_core/models/lcf.py", 'box = FULL_BOX if name == "local" else boxes[name]', "box = FULL_BOX"),
]
for name, path, old, new in M:
    src = open(path).read()
    assert src.count(old) == 1, (name, old)
    open(path, "w").write(src.replace(old, new))
    try:
        r = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_equations.py", "tests/test_model.py"],
                           capture_output=True, text=True)
        failed = sorted(set(f.split("[")[0] for f in re.findall(r"FAILED tests/(\S+)", r.stdout)))
        print(f"{name}: {len(failed)} failing: {failed}", flush=True)
    finally:
        open(path, "w").write(src)
